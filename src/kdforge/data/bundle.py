"""`build`: a registered data set loaded, split and normalized, from its own settings (`DataSettings`). Importing
this module registers every source (`kdforge.data.sources`)."""
from __future__ import annotations

from dataclasses import asdict

import torch

from kdforge.data import augment, sources
from kdforge.data.root import resolve_root
from kdforge.data.settings import DEFAULT_VAL_FRACTION, DataSettings
from kdforge.data.splits import stratified_split, subset, take
from kdforge.data.types import DataBundle, DataSpec, Split
from kdforge.errors import ConfigError
from kdforge.registry import DATASETS

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
