"""MNIST-1D (Greydanus 2020): the official 4,000/1,000 pickle of 40-point signals, 10 classes.

A pickle can run arbitrary code when loaded, so the file is first checked against a pinned SHA-256 and then
read with an unpickler that can build numpy arrays and nothing else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdforge.data.checksums import read_verified
from kdforge.data.safe_pickle import load_restricted
from kdforge.data.sources.base import Loaded, SourceParams, finish, register, require
from kdforge.data.types import Split
from kdforge.errors import DataError

FILE = "mnist1d/mnist1d_data.pkl"
# greydanus/mnist1d @7878d96 mnist1d_data.pkl, as listed in the data snapshot's SHA256SUMS.
PINNED_SHA256 = "e95257676e9fb04568e46dda007da22cc8664ccba1451456afde55d7f6dd6aa5"
LENGTH = 40
NUM_CLASSES = 10
KEYS = ("x", "y", "x_test", "y_test")

def load_arrays(data: bytes, path: Path) -> dict[str, Any]:
    """Unpickle `data` (read from `path`) allowing numpy arrays only; a refused or broken pickle is a DataError."""
    obj = load_restricted(data, path)
    if not isinstance(obj, dict) or any(k not in obj for k in KEYS):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: expected a dict with keys {KEYS}, found {found}")
    return obj


@register("mnist1d")
def load(root: Path | None, params: SourceParams) -> Loaded:
    """Input shape (40,), 10 classes, 4,000 train / 1,000 test."""
    assert root is not None, "mnist1d needs the data folder"
    path = require(root / FILE)
    arrays = load_arrays(read_verified(path, PINNED_SHA256), path)
    train, test = (_split(arrays, x_key, y_key, path) for x_key, y_key in (("x", "y"), ("x_test", "y_test")))
    return finish("mnist1d", train, test, num_classes=NUM_CLASSES)


def _split(arrays: dict[str, Any], x_key: str, y_key: str, path: Path) -> Split:
    x, y = np.asarray(arrays[x_key]), np.asarray(arrays[y_key])
    if x.ndim != 2 or x.shape[1] != LENGTH or y.shape != (x.shape[0],):
        raise DataError(f"{path}: {x_key} {x.shape} / {y_key} {y.shape}, expected (N, {LENGTH}) / (N,)")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DataError(f"{path}: {y_key} has labels outside 0-{NUM_CLASSES - 1}")
    return Split(torch.from_numpy(x), torch.from_numpy(y).long())
