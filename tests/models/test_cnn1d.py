"""`cnn1d` against a line-by-line port of the official MNIST-1D ConvBase (greydanus/mnist1d@7878d96
notebooks/models.py:36-54): the same initial weights from the same seed and the same logits."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kdforge.config.schema import ModelConfig
from kdforge.data.types import DataSpec
from kdforge.models import build

# The port lives once, beside the bench script that trains it in the official loop (bench/_mnist1d_official.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _mnist1d_official import OfficialConvBase  # noqa: E402

SPEC = DataSpec("mnist1d", (40,), 10)


def _pair(seed: int) -> tuple[nn.Module, OfficialConvBase]:
    torch.manual_seed(seed)
    ours = build(ModelConfig(name="cnn1d"), SPEC)
    torch.manual_seed(seed)
    return ours, OfficialConvBase(output_size=10)


@pytest.mark.parametrize("seed", [0, 42])
def test_same_seed_gives_the_official_initial_weights(seed: int) -> None:
    """PyTorch's default init, drawn in the same order (conv1, conv2, conv3, linear): a seeded run starts where the
    official one does, so no initialisation difference can explain a gap between the two."""
    ours, official = _pair(seed)
    theirs = list(official.state_dict().values())
    assert [tuple(v.shape) for v in ours.state_dict().values()] == [tuple(v.shape) for v in theirs]
    for a, b in zip(ours.state_dict().values(), theirs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(7, 40), (7, 1, 40)])
def test_same_logits_as_the_official_forward(shape: tuple[int, ...]) -> None:
    """Same flatten order (channel-major, as `h3.view(B, -1)`) and the same input handling as `x.view(-1, 1, 40)`."""
    ours, official = _pair(3)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(ours(x), official(x))


def test_same_gradients_as_the_official_model() -> None:
    ours, official = _pair(5)
    x, y = torch.randn(16, 40), torch.randint(0, 10, (16,))
    for model in (ours, official):
        nn.functional.cross_entropy(model(x), y).backward()
    for a, b in zip(ours.parameters(), official.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-7)
