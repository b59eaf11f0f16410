"""Batches from a split held in memory: one seeded generator per epoch, so any epoch can be replayed alone."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from kdforge.config.schema import AugmentConfig
from kdforge.data import augment as aug
from kdforge.data.types import Batch, Split


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed that depends on (seed, epoch) only; hashing keeps (s, e+1) and (s+1, e) unrelated."""
    digest = hashlib.blake2b(f"kdforge.epoch:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class BatchIterator:
    """Shuffled, augmented training batches.

    `epoch(e)` draws its permutation and every augmentation choice from a generator seeded by (seed, e) alone,
    so epoch e yields the same batches whatever ran before: resuming from a checkpoint at an epoch boundary
    continues exactly as an uninterrupted run would.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        num_classes: int,
        augment: AugmentConfig,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        name: str = "train",
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if split.graph is not None or not split.x.is_floating_point():
            aug.require_off(augment, "graph" if split.graph is not None else "token")
        else:
            aug.validate(augment, tuple(split.x.shape[1:]), "the training")
        self.split = split
        self.name = name
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.augment = augment
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, e: int, start: int = 0) -> Iterator[Batch]:
        """The batches of epoch `e` from its `start`-th on; `Batch.index` holds each sample's position in the split.

        Skipped batches still draw their augmentation parameters (and nothing else), so batch `start` onward is
        exactly what an epoch read from its beginning yields: a run resumed mid-epoch continues bit for bit.
        """
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, e))
        n = len(self.split)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        augmenting = self.split.graph is None and self.augment_on
        for j, first in enumerate(range(0, len(self) * self.batch_size, self.batch_size)):
            index = order[first : first + self.batch_size]
            params = aug.draw(self.augment, (len(index), *self.split.x.shape[1:]), gen) if augmenting else {}
            if j < start:
                continue
            if not augmenting:
                yield self.split.batch(index, split=self.name)
                continue
            y = None if self.split.y is None else self.split.y.index_select(0, index)
            x = aug.replay(self.split.x.index_select(0, index), params)
            target = aug.mixed_target(y, params, self.num_classes)
            yield self.split.batch(index, x=x, target=target, params=params, split=self.name)

    @property
    def augment_on(self) -> bool:
        return self.augment != AugmentConfig()


def iter_eval(split: Split, batch_size: int) -> Iterator[Batch]:
    """Batches of `split` in order, without augmentation, for evaluation. A graph is one batch: every forward
    pass runs on the whole graph anyway."""
    n = len(split)
    step = n if split.graph is not None else batch_size
    for start in range(0, n, max(step, 1)):
        yield split.batch(torch.arange(start, min(start + step, n)), split="eval")
