"""scikit-learn's 8x8 digits (1,797 images, bundled with sklearn): a data set that needs no files at all."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from kdforge.data.sources.base import Loaded, SourceParams, finish, register
from kdforge.data.splits import stratified_split, take
from kdforge.data.types import Split
from kdforge.errors import require_extra

# The data set has no official test split; this one is fixed forever so that results stay comparable.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


@register("digits", needs_root=False)
def load(root: Path | None, params: SourceParams) -> Loaded:
    """1x8x8 images with pixel values 0-16, 10 classes; a stratified 20% test split carved with a fixed seed."""
    images, target = _digits_arrays()
    full = Split(x=torch.from_numpy(images).unsqueeze(1), y=torch.from_numpy(target).long())
    train_idx, test_idx = stratified_split(full.y, TEST_FRACTION, TEST_SPLIT_SEED)
    return finish("digits", take(full, train_idx), take(full, test_idx), num_classes=10)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 8, 8] float64, labels [1797]) as `sklearn.datasets.load_digits` gives them, read from the
    csv file scikit-learn ships, without importing sklearn (1-2 s in every process that trains on digits: test
    subprocesses, torchrun workers); through sklearn itself when the file is not where it is expected."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders), None)
    if path is None or not path.is_file():
        sklearn_datasets = require_extra("sklearn.datasets", "digits", "the digits data set")
        digits = sklearn_datasets.load_digits()
        return digits.images, digits.target
    with gzip.open(path, "rt") as f:  # what sklearn's loader does: np.loadtxt on the gzip stream, float64
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
