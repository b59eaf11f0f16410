"""Subsets, the stratified validation split, and `build` end to end on the in-memory sources."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from kdforge.api import build_data
from kdforge.config.schema import AugmentConfig, DataConfig
from kdforge.data import build
from kdforge.data.splits import stratified_split, subset
from kdforge.data.types import Split
from kdforge.errors import ConfigError

IMBALANCED = torch.cat([torch.full((n,), c) for c, n in enumerate([100, 50, 30, 7])])[torch.randperm(187)]


def test_stratified_split_is_reproducible_disjoint_and_stratified() -> None:
    kept, held = stratified_split(IMBALANCED, 0.2, seed=3)
    again = stratified_split(IMBALANCED, 0.2, seed=3)
    assert torch.equal(kept, again[0]) and torch.equal(held, again[1])
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(IMBALANCED)))
    assert torch.bincount(IMBALANCED[held], minlength=4).tolist() == [20, 10, 6, 1]
    other = stratified_split(IMBALANCED, 0.2, seed=4)[1]
    assert not torch.equal(held, other)


def test_stratified_split_ignores_the_global_rng() -> None:
    torch.manual_seed(0)
    first = stratified_split(IMBALANCED, 0.3, seed=1)[1]
    torch.manual_seed(123)
    assert torch.equal(first, stratified_split(IMBALANCED, 0.3, seed=1)[1])


def test_subsets_are_nested_and_keep_order() -> None:
    split = Split(x=torch.arange(100.0).view(100, 1), y=torch.arange(100) % 10)
    small, large = subset(split, 10), subset(split, 30)
    assert set(small.x.flatten().tolist()) <= set(large.x.flatten().tolist())
    assert torch.equal(small.x.flatten(), small.x.flatten().sort().values)
    assert subset(split, None) is split and subset(split, 1000) is split


def _data(**kwargs: Any) -> DataConfig:
    return DataConfig(**{"name": "digits", **kwargs})


def test_build_digits_splits_sizes_and_normalization() -> None:
    bundle = build_data(_data(val_fraction=0.0))
    assert bundle.spec.input_shape == (1, 8, 8) and bundle.spec.num_classes == 10
    assert len(bundle.train) + len(bundle.test) == 1797 and len(bundle.test) == 359
    assert bundle.val is bundle.test  # documented: val_fraction 0 means "validate on test"
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert abs(float(bundle.train.x.mean())) < 1e-4 and abs(float(bundle.train.x.std()) - 1) < 1e-3


def test_build_validation_split_is_fixed_by_split_seed_only() -> None:
    a = build_data(_data(val_fraction=0.25, split_seed=7))
    torch.manual_seed(999)
    b = build_data(_data(val_fraction=0.25, split_seed=7))
    c = build_data(_data(val_fraction=0.25, split_seed=8))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)
    assert len(a.train) + len(a.val) == 1438
    assert torch.bincount(a.val.y).min() >= 33  # about 25% of each ~144-sample class


def test_build_subsets() -> None:
    bundle = build_data(_data(train_subset=200, test_subset=50, val_fraction=0.1))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (180, 20, 50)


def test_empty_validation_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.val_fraction"):
        build_data(_data(train_subset=3, val_fraction=0.1))


def test_gaussian_params_and_errors() -> None:
    bundle = build_data(DataConfig(name="gaussian", params={"dim": 5, "num_classes": 3, "n_train": 300}))
    assert bundle.spec.input_shape == (5,) and bundle.spec.num_classes == 3
    assert len(bundle.train) + len(bundle.val) == 300
    with pytest.raises(ConfigError, match=r"data\.params\.dims: .*allowed: n_train, n_test, dim, num_classes"):
        build_data(DataConfig(name="gaussian", params={"dims": 5}))
    with pytest.raises(ConfigError, match=r"data\.params\.dim: "):
        build_data(DataConfig(name="gaussian", params={"dim": "wide"}))
    with pytest.raises(ConfigError, match=r"data\.params\.seed: unknown parameter of data set 'digits'; allowed: none"):
        build_data(_data(params={"seed": 1}))


def test_unknown_data_set_name() -> None:
    with pytest.raises(ConfigError, match=r"data.name: unknown dataset 'digit' \(did you mean 'digits'\?\)"):
        build_data(_data(name="digit"))


@pytest.mark.parametrize("key", ["crop_padding", "flip", "cutmix_alpha"])
def test_image_augmentations_on_vectors_are_refused(key: str) -> None:
    value = 1.0 if key == "cutmix_alpha" else (True if key == "flip" else 4)
    with pytest.raises(ConfigError, match=rf"data\.augment\.{key} applies to images; gaussian inputs"):
        build_data(DataConfig(name="gaussian", augment=AugmentConfig(**{key: value})))
    build_data(DataConfig(name="gaussian", augment=AugmentConfig(mixup_alpha=0.2)))  # mixup works on any input
