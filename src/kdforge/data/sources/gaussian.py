"""A synthetic Gaussian mixture: one isotropic unit-variance blob per class, for tests and quick sanity runs."""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor

from kdforge.data.sources.base import Loaded, SourceParams, finish, register
from kdforge.data.types import Split


class GaussianParams(SourceParams):
    n_train: int = Field(2000, gt=0)
    n_test: int = Field(1000, gt=0)
    dim: int = Field(16, gt=0)
    num_classes: int = Field(4, ge=2)
    separation: float = Field(3.0, ge=0, description="distance of every class mean from the origin, in noise stds")
    seed: int = Field(0, description="seed of the means and the samples; the data set is a function of its params")


@register("gaussian", params=GaussianParams, needs_root=False)
def load(root: Path | None, params: GaussianParams) -> Loaded:
    """Class means at random directions, `separation` from the origin; balanced classes; input shape (dim,)."""
    gen = torch.Generator().manual_seed(params.seed)
    means = torch.randn(params.num_classes, params.dim, generator=gen)
    means *= params.separation / means.norm(dim=1, keepdim=True)
    train, test = (_sample(means, n, gen) for n in (params.n_train, params.n_test))
    return finish("gaussian", train, test, num_classes=params.num_classes)


def _sample(means: Tensor, n: int, gen: torch.Generator) -> Split:
    y = torch.randperm(n, generator=gen) % means.shape[0]
    return Split(x=means[y] + torch.randn(n, means.shape[1], generator=gen), y=y)
