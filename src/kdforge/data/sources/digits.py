"""scikit-learn's 8x8 digits (1,797 images, bundled with sklearn): a data set that needs no files at all."""
from __future__ import annotations

from pathlib import Path

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
    # here, not at the top: importing sklearn takes most of a second
    sklearn_datasets = require_extra("sklearn.datasets", "digits", "the digits data set")

    digits = sklearn_datasets.load_digits()
    full = Split(x=torch.from_numpy(digits.images).unsqueeze(1), y=torch.from_numpy(digits.target).long())
    train_idx, test_idx = stratified_split(full.y, TEST_FRACTION, TEST_SPLIT_SEED)
    return finish("digits", take(full, train_idx), take(full, test_idx), num_classes=10)
