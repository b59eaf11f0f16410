"""Data sets held as tensors: `build` loads, splits and normalizes one, from its own settings (`DataSettings`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from kdforge.data import augment, sources
from kdforge.data.augment import AugmentSettings
from kdforge.data.root import resolve_root
from kdforge.data.splits import stratified_split, subset, take
from kdforge.data.types import DataBundle, DataSpec, Split
from kdforge.errors import ConfigError
from kdforge.registry import DATASETS

DEFAULT_VAL_FRACTION = 0.1  # the schema's default too (a test keeps them equal)


@dataclass(frozen=True)
class LabelBudget:
    """Keep the labels of only part of the training split: a fraction (below 1) or a count (1 or more), stratified
    by class and cut from `seed`; the rest becomes the unlabeled part."""

    labeled: float
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labeled", float(self.labeled))


@dataclass(frozen=True)
class DataSettings:
    """What `build` makes: the registered data set `name` (with its `params`) from `root`, cut to subsets, a
    validation split and a label budget. `val_fraction` None means not given: the default share, or the data set's
    own validation split (which an explicit share would contradict). `augment` is checked against the inputs."""

    name: str
    root: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    label_budget: LabelBudget | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def build(cfg: DataSettings) -> DataBundle:
    """Load `cfg.name` and cut it into train / val / test (and an unlabeled part under a label budget).

    Order: load (normalized with the full official train split's statistics), then `train_subset` /
    `test_subset` (nested prefixes of a permutation fixed once and for all), then the validation split: a
    stratified `val_fraction` of the remaining train samples, drawn from `cfg.split_seed` alone so that it stays
    the same across training seeds (data sets with their own validation split, e.g. SST-2 and the Planetoid
    graphs, keep it). With `val_fraction == 0` there is no validation data and `val` IS the test split (the same
    tensors): model selection then looks at test, which the config asked for explicitly. Last, a label budget
    keeps the labels of a stratified part of train and moves the rest to `unlabeled` (labels hidden).
    """
    source: sources.Source = DATASETS.lookup(cfg.name, "data.name")
    root = resolve_root(cfg.root) if source.needs_root else None
    loaded = source(root, cfg.params)
    spec = loaded.spec if isinstance(loaded, DataBundle) else loaded[0]
    if spec.kind == "tensor":
        augment.validate(cfg.augment, spec.input_shape, cfg.name)
    else:
        augment.require_off(cfg.augment, "graph" if spec.kind == "graph" else "token")
    bundle = _with_validation(cfg, loaded)
    return _with_label_budget(cfg, bundle) if cfg.label_budget is not None else bundle


def _with_validation(cfg: DataSettings, loaded: DataBundle | tuple[DataSpec, Split, Split]) -> DataBundle:
    if isinstance(loaded, DataBundle):
        if cfg.val_fraction is not None:
            raise ConfigError(f"data.val_fraction does not apply to {cfg.name}, which has its own validation "
                              "split; remove data.val_fraction")
        assert loaded.val is not None and loaded.test is not None
        train, test = subset(loaded.train, cfg.train_subset), subset(loaded.test, cfg.test_subset)
        return DataBundle(spec=loaded.spec, train=train, val=loaded.val, test=test)
    spec, train, test = loaded
    train, test = subset(train, cfg.train_subset), subset(test, cfg.test_subset)
    fraction = DEFAULT_VAL_FRACTION if cfg.val_fraction is None else cfg.val_fraction
    if fraction == 0:
        return DataBundle(spec=spec, train=train, val=test, test=test)
    kept, held = stratified_split(_labels(train), fraction, cfg.split_seed)
    if len(held) == 0 or len(kept) == 0:
        raise ConfigError(
            f"data.val_fraction={fraction} of {len(train)} training samples leaves an empty "
            "train or validation split; raise data.train_subset or change data.val_fraction"
        )
    return DataBundle(spec=spec, train=take(train, kept), val=take(train, held), test=test,
                      splits={"val_fraction": fraction, "split_seed": cfg.split_seed,
                              "train": kept.tolist(), "val": held.tolist()})


def _with_label_budget(cfg: DataSettings, bundle: DataBundle) -> DataBundle:
    """Keep the labels of a stratified `label_budget.labeled` part of train; the rest becomes `unlabeled`."""
    budget, train = cfg.label_budget, bundle.train
    assert budget is not None
    n = len(train)
    count = round(budget.labeled * n) if budget.labeled < 1 else int(budget.labeled)
    if budget.labeled >= 1 and budget.labeled != count:
        raise ConfigError(f"data.label_budget.labeled={budget.labeled}: give a fraction below 1 or a whole count")
    y = _labels(train)
    if not 0 < count < n:
        raise ConfigError(f"data.label_budget.labeled={budget.labeled} of {n} training samples leaves no labeled or "
                          "no unlabeled sample; choose a fraction in (0, 1) or a count below the training size")
    unlabeled, labeled = stratified_split(y, count / n, budget.seed)
    missing = sorted(set(y.unique().tolist()) - set(y[labeled].unique().tolist()))
    if missing:
        raise ConfigError(f"data.label_budget.labeled={budget.labeled} leaves class(es) {missing} without a labeled "
                          "sample; raise it to at least one sample per class")
    positions = torch.tensor(bundle.splits["train"]) if "train" in bundle.splits else torch.arange(n)
    splits = {**bundle.splits, "label_budget": asdict(budget), "labeled": positions[labeled].tolist(),
              "unlabeled": positions[unlabeled].tolist()}
    return DataBundle(spec=bundle.spec, train=take(train, labeled), val=bundle.val, test=bundle.test,
                      unlabeled=take(train, unlabeled).unlabel(), splits=splits)


def _labels(split: Split) -> torch.Tensor:
    if split.y is None:
        raise ConfigError("the training split has no labels to stratify by")
    return split.y
