"""Data sets held as tensors: `build` loads, splits and normalizes one; `Batches` / `BatchIterator` draw batches.

Sources register themselves in `kdforge.registry.DATASETS` when `kdforge.data.sources` is imported (by `build`).
"""
from kdforge.data.augment import AugmentSettings
from kdforge.data.build import DataSettings, LabelBudget, build
from kdforge.data.loader import Batches, BatchIterator, ViewSource, iter_eval, predict
from kdforge.data.root import resolve_root
from kdforge.data.types import Batch, DataBundle, DataSpec, Split
from kdforge.registry import DATASETS

__all__ = ["DATASETS", "AugmentSettings", "Batch", "BatchIterator", "Batches", "DataBundle", "DataSettings",
           "DataSpec", "LabelBudget", "Split", "ViewSource", "build", "iter_eval", "predict", "resolve_root"]
