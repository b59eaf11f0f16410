"""Index arithmetic on splits: seeded subsets and stratified hold-outs, reproducible from a seed alone."""
from __future__ import annotations

import torch
from torch import Tensor

from kdforge.data.types import Split

# Subsets define which data an experiment uses at all, so they must not move with any seed a user varies.
SUBSET_SEED = 0


def take(split: Split, index: Tensor) -> Split:
    """The samples at `index`, copied into new contiguous tensors (so batches can be gathered cheaply)."""
    return split.take(index)


def subset(split: Split, n: int | None) -> Split:
    """The first `n` samples of a fixed permutation, kept in their original order.

    Taking a prefix of one permutation makes subsets nested: the 1,000-sample subset lies inside the 2,000 one,
    so results across subset sizes differ only by the added data.
    """
    if n is None or n >= len(split):
        return split
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return take(split, perm[:n].sort().values)


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (kept, held_out), both ascending, with round(fraction * len(y)) held out, stratified by class.

    Each class gives floor(fraction * n_c) samples and the classes with the largest remainders one more, so the
    size is exact and the class balance as close as integers allow. The split depends only on `y`, `fraction`
    and `seed`, never on a global RNG, so a validation split stays fixed across training seeds.
    """
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    order = perm[torch.sort(y[perm], stable=True).indices]  # grouped by class, random within a class
    grouped = y[order]
    counts = torch.bincount(y)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(y)) - first[grouped]
    held = rank < _held_counts(counts, fraction)[grouped]
    return order[~held].sort().values, order[held].sort().values


def _held_counts(counts: Tensor, fraction: float) -> Tensor:
    """Largest-remainder apportionment of round(fraction * total) over the classes."""
    quota = counts.double() * fraction
    held = quota.floor().long()
    extra = round(fraction * int(counts.sum())) - int(held.sum())
    held[torch.sort(held - quota, stable=True).indices[:extra]] += 1
    return held
