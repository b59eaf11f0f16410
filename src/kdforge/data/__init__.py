"""Data sets held as tensors: `build` loads, splits and normalizes one; `Batches` / `BatchIterator` draw batches.

The types, the loader and the settings load with the package (torch only: the engine imports them). `build` and
`DATASETS` load the sources on first use, which registers them in `kdforge.registry.DATASETS`.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from kdforge.data.augment import AugmentSettings
from kdforge.data.loader import Batches, BatchIterator, ViewSource, iter_eval, predict
from kdforge.data.root import resolve_root
from kdforge.data.settings import DataSettings, LabelBudget
from kdforge.data.types import Batch, DataBundle, DataSpec, Split

__all__ = ["DATASETS", "AugmentSettings", "Batch", "BatchIterator", "Batches", "DataBundle", "DataSettings",
           "DataSpec", "LabelBudget", "Split", "ViewSource", "build", "iter_eval", "predict", "resolve_root"]


def __getattr__(name: str) -> Any:
    if name == "build":
        return import_module("kdforge.data.bundle").build
    if name == "DATASETS":
        import_module("kdforge.data.bundle")  # registers the sources
        return import_module("kdforge.registry").DATASETS
    raise AttributeError(f"module 'kdforge.data' has no attribute {name!r}")
