"""kdforge's `mnist1d` is the official pickle's samples, in the stored order, rescaled only by a near-identity
standardization (the pickle is already standardized over all 5,000 samples: greydanus/mnist1d@7878d96
mnist1d/data.py:87-88); the training loop of the official benchmark sees the same signals."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kdforge.data.checksums import read_verified
from kdforge.data.sources import mnist1d
from kdforge.registry import DATASETS


@pytest.fixture
def official_and_ours(real_file: Callable[[str], Path]) -> tuple[dict, tuple]:
    path = real_file(mnist1d.FILE)
    raw = mnist1d.load_arrays(read_verified(path, mnist1d.PINNED_SHA256), path)
    return raw, DATASETS["mnist1d"](path.parent.parent, {})


def test_same_samples_labels_and_order_as_the_official_pickle(official_and_ours: tuple[dict, tuple]) -> None:
    raw, (_, train, test) = official_and_ours
    x_raw = torch.from_numpy(np.asarray(raw["x"])).float()
    mean, std = x_raw.double().mean(), x_raw.double().std(correction=0)
    for split, xk, yk in ((train, "x", "y"), (test, "x_test", "y_test")):
        assert torch.equal(split.y, torch.from_numpy(np.asarray(raw[yk])).long())
        expected = (torch.from_numpy(np.asarray(raw[xk])) - mean) / std
        torch.testing.assert_close(split.x.double(), expected, rtol=0, atol=1e-5)


def test_standardization_is_close_to_the_identity(official_and_ours: tuple[dict, tuple]) -> None:
    """So an official model fed the raw pickle and a kdforge model fed the standardized split see inputs that
    differ by less than 0.3 % in scale and 0.001 in offset."""
    raw, (_, train, _) = official_and_ours
    x_raw = torch.from_numpy(np.asarray(raw["x"]))
    mean, std = float(x_raw.mean()), float(x_raw.std(correction=0))
    assert abs(mean) < 1e-3 and abs(std - 1) < 3e-3
    torch.testing.assert_close(train.x.double(), x_raw, rtol=0, atol=0.02)
