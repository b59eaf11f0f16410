"""Data sets held as tensors: `build` loads, splits and normalizes one; `BatchIterator` draws training batches.

Sources register themselves in `kdforge.registry.DATASETS` when `kdforge.data.sources` is imported (below).
"""
from __future__ import annotations

from kdforge.config.schema import DataConfig
from kdforge.data import augment, sources
from kdforge.data.loader import BatchIterator, iter_eval
from kdforge.data.root import resolve_root
from kdforge.data.splits import stratified_split, subset, take
from kdforge.data.types import Batch, DataBundle, DataSpec, Split
from kdforge.errors import ConfigError
from kdforge.registry import DATASETS

__all__ = ["Batch", "BatchIterator", "DataBundle", "DataSpec", "Split", "build", "iter_eval", "resolve_root"]


def build(cfg: DataConfig) -> DataBundle:
    """Load `cfg.name` and cut it into train / val / test.

    Order: load (normalized with the full official train split's statistics), then `train_subset` /
    `test_subset` (nested prefixes of a permutation fixed once and for all), then the validation split: a
    stratified `val_fraction` of the remaining train samples, drawn from `cfg.split_seed` alone so that it stays
    the same across training seeds. With `val_fraction == 0` there is no validation data and `val` IS the test
    split (the same tensors): model selection then looks at test, which the config asked for explicitly.
    """
    source: sources.Source = DATASETS.lookup(cfg.name, "data.name")
    root = resolve_root(cfg.root) if source.needs_root else None
    spec, train, test = source(root, cfg.params)
    augment.validate(cfg.augment, spec.input_shape, cfg.name)
    train, test = subset(train, cfg.train_subset), subset(test, cfg.test_subset)
    if cfg.val_fraction == 0:
        return DataBundle(spec=spec, train=train, val=test, test=test)
    kept, held = stratified_split(train.y, cfg.val_fraction, cfg.split_seed)
    if len(held) == 0 or len(kept) == 0:
        raise ConfigError(
            f"data.val_fraction={cfg.val_fraction} of {len(train)} training samples leaves an empty "
            "train or validation split; raise data.train_subset or change data.val_fraction"
        )
    return DataBundle(spec=spec, train=take(train, kept), val=take(train, held), test=test)
