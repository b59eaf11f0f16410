"""Batches from a split held in memory: one seeded generator per epoch, so any epoch can be replayed alone."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from kdforge.data import augment as aug
from kdforge.data.augment import AugmentSettings
from kdforge.data.seeds import epoch_seed, stream_seed
from kdforge.data.types import Batch, DataBundle, Split


@runtime_checkable
class ViewSource(Protocol):
    """Recorded views of a split (a teacher-output cache): for the epochs it `covers`, the loader takes each
    sample's augmentation from here instead of drawing it, so the student sees exactly the view the teacher's
    recorded output was computed on. `view` returns the recorded epoch the views come from (it becomes
    `Batch.view_epoch`, which tells the teacher source which recording to read) and per-sample params (see
    `augment`)."""

    def covers(self, split: str, epoch: int) -> bool: ...
    def view(self, split: str, epoch: int, index: Tensor) -> tuple[int, dict[str, Tensor]]: ...


class BatchIterator:
    """Shuffled, augmented training batches, sharded over processes.

    `epoch(e)` draws its permutation and every augmentation choice from a generator seeded by (seed, e) alone,
    so epoch e yields the same batches whatever ran before: resuming from a checkpoint at an epoch boundary
    continues exactly as an uninterrupted run would.

    `batch_size` is the global batch. With `world_size` processes every process draws the same global batch
    and its augmentation, and takes its own contiguous share of the rows (sizes differ by at most one); each
    sample's view is rebuilt from per-sample params, so N processes see exactly the views one process would.
    A last batch with fewer samples than processes is dropped. `views` (a teacher-output cache) supplies
    the views of the epochs it covers.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        num_classes: int,
        augment: AugmentSettings,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        name: str = "train",
        rank: int = 0,
        world_size: int = 1,
        views: ViewSource | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if not split.augmentable:
            aug.require_off(augment, "graph" if split.graph is not None else
                            "token" if not split.x.is_floating_point() else "multi-input")
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
        self.rank, self.world_size = rank, world_size
        self.views = views

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        full, rest = divmod(n, b)
        return full + (0 < rest and not self.drop_last and rest >= self.world_size)

    def epoch(self, e: int, start: int = 0) -> Iterator[Batch]:
        """This process's share of the batches of epoch `e` from its `start`-th on; `Batch.index` holds each
        sample's position in the split.

        Skipped batches still draw their augmentation parameters (and nothing else), so batch `start` onward is
        exactly what an epoch read from its beginning yields: a run resumed mid-epoch continues bit for bit.
        """
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, e))
        n = len(self.split)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        recorded = self.views is not None and self.views.covers(self.name, e)
        drawing = self.split.graph is None and self.augment_on and not recorded
        for j in range(len(self)):
            index = order[j * self.batch_size : (j + 1) * self.batch_size]
            params = aug.draw(self.augment, (len(index), *self.split.x.shape[1:]), gen) if drawing else {}
            if j < start:
                continue
            rows = torch.tensor_split(torch.arange(len(index)), self.world_size)[self.rank]
            local = index.index_select(0, rows)
            if recorded:
                yield self._view_batch(local, *self.views.view(self.name, e, local))  # type: ignore[union-attr]
            elif drawing:
                yield self._drawn_batch(index, rows, params)
            else:
                yield self.split.batch(local, split=self.name)

    def _drawn_batch(self, index: Tensor, rows: Tensor, params: dict[str, Tensor]) -> Batch:
        """This process's `rows` of the global batch at `index`, augmented with the `params` drawn for it: the whole
        batch's views (mixing partners may sit in another process's rows), then this process's share of them,
        carrying its rows' params in per-sample form (what a teacher-output cache records)."""
        x = aug.replay(self.split.x.index_select(0, index), params)
        y = None if self.split.y is None else self.split.y.index_select(0, index)
        target = aug.mixed_target(y, params, self.num_classes)
        return self.split.batch(index.index_select(0, rows), x=x.index_select(0, rows),
                                target=None if target is None else target.index_select(0, rows),
                                params=aug.rows_of(aug.per_sample(params, index), rows), split=self.name)

    def _view_batch(self, index: Tensor, view_epoch: int, params: dict[str, Tensor]) -> Batch:
        """The batch of the samples at `index`, each in the view its per-sample `params` describe (recorded views:
        any batch composition, partners anywhere in the split), from the recording of epoch `view_epoch`."""
        if not self.split.augmentable:
            return self.split.batch(index, params=params, split=self.name, view_epoch=view_epoch)
        y = None if self.split.y is None else self.split.y.index_select(0, index)
        x = aug.replay_samples(self.split.x, index, params)
        target = aug.mixed_target_samples(self.split.y, y, params, self.num_classes)
        return self.split.batch(index, x=x, target=target, params=params, split=self.name, view_epoch=view_epoch)

    @property
    def augment_on(self) -> bool:
        return self.augment.on


@dataclass(frozen=True, eq=False)
class Batches:
    """How one run draws batches from every split of its data: the batch size, the augmentation and, for the
    epochs they cover, recorded views (a teacher-output cache's; the API wires them here). `loader(split, seed)`
    seeds each split's stream from the run's seed by `stream_seed`, so the trainer, a method's other loaders
    (`StepContext.loader`) and the cache that records the views they will replay all draw the same batches."""

    data: DataBundle
    size: int
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    views: ViewSource | None = None

    def loader(self, split: str, seed: int, rank: int = 0, world_size: int = 1) -> BatchIterator:
        """`split`'s batches in a run seeded `seed`, this process's share of each (`rank` of `world_size`)."""
        return BatchIterator(self.data.split(split), self.size, self.data.spec.num_classes, self.augment,
                             seed=stream_seed(seed, split), name=split, rank=rank, world_size=world_size,
                             views=self.views)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> Tensor:
    """Logits of `model` on a whole split, in order, on the CPU (the model's train/eval mode is kept)."""
    was_training = model.training
    model.eval()
    out = [batch.to(device).forward(model).float().cpu() for batch in iter_eval(split, batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def iter_eval(split: Split, batch_size: int) -> Iterator[Batch]:
    """Batches of `split` in order, without augmentation, for evaluation. A graph is one batch: every forward
    pass runs on the whole graph anyway."""
    n = len(split)
    step = n if split.graph is not None else batch_size
    for start in range(0, n, max(step, 1)):
        yield split.batch(torch.arange(start, min(start + step, n)), split="eval")
