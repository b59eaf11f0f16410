"""Training batches read through a torch DataLoader: data larger than memory, per-sample transforms, workers.

The in-memory `BatchIterator` stays the fast default; this path serves a map-style `Dataset` (read sample by
sample, in workers if asked) or an `IterableDataset` with the same contract as the in-memory one:
  seeds     a map-style epoch e visits the samples in `randperm(n)` drawn from `epoch_seed(stream seed, e)`, the
            in-memory iterator's very order (the same data streamed and in memory give the same batches); each
            sample's own transform draws from torch's CPU generator (torchvision's random transforms draw there) are
            seeded by (epoch seed, sample), so they depend neither on the workers nor on what ran before;
            draws from Python's `random` or NumPy inside a transform are not reseeded. An IterableDataset keeps its
            own order (`set_epoch(e)` is called when it has one); its k-th sample's draws are seeded the same way.
            With workers it must split itself among them (`get_worker_info`), as with any DataLoader.
  resume    `epoch(e, start)` yields exactly what an epoch read from its beginning yields from batch `start` on
            (a map-style source loads none of the skipped samples; an iterable one reads through them).
  sharding  every process forms the same global batch and keeps its contiguous share of the rows (sizes differ
            by at most one), as the in-memory iterator does; a map-style source loads only its own rows.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from kdforge.data.loader import Batches, BatchIterator
from kdforge.data.seeds import epoch_seed, hash_seed, stream_seed
from kdforge.data.types import Batch, Split, all_finite
from kdforge.errors import ConfigError


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded by `seed`, and give it its state back after (the
    training's own stream is not touched; CUDA generators are not involved). Python's `random` and NumPy are
    left alone: saving and restoring Python's state costs ~70 µs a sample, several times a sample's read."""
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(seed % 2**63)
    try:
        yield
    finally:
        gen.set_state(state)


def sample_seed(epoch_seed_: int, key: int | str) -> int:
    """The seed of one sample's transform draws in an epoch (`key`: its index, or worker:position in a stream)."""
    return hash_seed(epoch_seed_, str(key))


class _SeededSamples(Dataset):  # type: ignore[type-arg]
    """A map-style dataset read at (index, epoch seed) keys: each sample's transform draws seeded by both."""

    def __init__(self, dataset: Dataset) -> None:  # type: ignore[type-arg]
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded(sample_seed(seed, index)):
            return self.dataset[index]


class _SeededStream(IterableDataset):  # type: ignore[type-arg]
    """An iterable dataset whose k-th item (per worker) is produced under a seed of (epoch seed, worker, k)."""

    def __init__(self, dataset: IterableDataset, seed: int) -> None:  # type: ignore[type-arg]
        self.dataset, self.seed = dataset, seed

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, it, k = (0 if info is None else info.id), iter(self.dataset), 0
        while True:
            with seeded(sample_seed(self.seed, f"{worker}:{k}")):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
            k += 1


class _Keys:
    """The batch sampler of a map-style epoch from batch `start` on: each batch's (index, epoch seed) keys, made
    as the loader asks (an epoch's keys are never all held at once)."""

    def __init__(self, it: "StreamIterator", order: Tensor, seed: int, start: int) -> None:
        self.it, self.order, self.seed, self.start = it, order, seed, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for j in range(self.start, len(self.it)):
            yield [(int(i), self.seed) for i in self.it.local(self.order, j)]

    def __len__(self) -> int:
        return max(len(self.it) - self.start, 0)


@dataclass(frozen=True, eq=False)
class StreamSource:
    """Where streamed training samples come from: `dataset` ((x, y) items) with `size` samples an epoch, read by
    `workers` processes and batched by `collate` (torch's default when None)."""

    dataset: Dataset  # type: ignore[type-arg]
    size: int
    workers: int = 0
    collate: Callable[[list[Any]], Any] | None = None
    pin_memory: bool = False

    @property
    def iterable(self) -> bool:
        return isinstance(self.dataset, IterableDataset)

    def loader(self, data: Dataset, seed: int, **how: Any) -> DataLoader:  # type: ignore[type-arg]
        """A DataLoader over `data`; its own generator (seeded) draws the workers' base seed, so creating it takes
        nothing from the training's random stream."""
        return DataLoader(data, num_workers=self.workers, collate_fn=self.collate, pin_memory=self.pin_memory,
                          generator=torch.Generator().manual_seed(seed % 2**63), **how)


class StreamIterator:
    """`BatchIterator`'s contract (len, `batch_size`, `epoch(e, start)`) over a `StreamSource`; see the module
    docstring for its seeds, resume position and sharding."""

    def __init__(self, source: StreamSource, batch_size: int, seed: int, name: str = "train", rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.source, self.batch_size, self.seed, self.name = source, batch_size, seed, name
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:  # the in-memory iterator's count: a last batch smaller than the world is dropped
        full, rest = divmod(self.source.size, self.batch_size)
        return full + (0 < rest and rest >= self.world_size)

    def rows(self, n: int) -> Tensor:
        """This process's rows of a global batch of `n` samples."""
        return torch.tensor_split(torch.arange(n), self.world_size)[self.rank]

    def epoch(self, e: int, start: int = 0) -> Iterator[Batch]:
        seed = epoch_seed(self.seed, e)
        return self._iterable(e, seed, start) if self.source.iterable else self._mapped(seed, start)

    def local(self, order: Tensor, j: int) -> Tensor:
        """This process's share of global batch `j` of an epoch visiting the samples in `order`."""
        index = order[j * self.batch_size: (j + 1) * self.batch_size]
        return index.index_select(0, self.rows(len(index)))

    def _mapped(self, seed: int, start: int) -> Iterator[Batch]:
        order = torch.randperm(self.source.size, generator=torch.Generator().manual_seed(seed))
        keys = _Keys(self, order, seed, start)
        loader = self.source.loader(_SeededSamples(self.source.dataset), seed, batch_sampler=keys)
        for j, items in zip(range(start, len(self)), loader):
            yield self._batch(items, self.local(order, j))

    def _iterable(self, e: int, seed: int, start: int) -> Iterator[Batch]:
        dataset = self.source.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(e)
        stream = _SeededStream(dataset, seed)  # type: ignore[arg-type]
        loader = self.source.loader(stream, seed, batch_size=self.batch_size)
        for j, items in zip(range(len(self)), loader):
            if j < start:
                continue  # read through: an iterable source can only be skipped by reading it
            x, y = _pair(items)
            rows = self.rows(len(x))
            yield self._batch((x.index_select(0, rows), y.index_select(0, rows)), j * self.batch_size + rows)

    def _batch(self, items: Any, index: Tensor) -> Batch:
        x, y = _pair(items)
        if x.is_floating_point():
            x = x.float()
            if not all_finite(x):
                raise ConfigError(f"a streamed {self.name} batch holds NaN or infinite input values (samples "
                                 f"{index[:5].tolist()}...); clean the data or its transform")
        return Batch(x=x, y=y.long(), index=index, split=self.name)


def _pair(items: Any) -> tuple[Tensor, Tensor]:
    """The inputs and labels of a collated batch of (x, y) items."""
    if not isinstance(items, (tuple, list)) or len(items) != 2:
        raise ConfigError(f"streamed samples must be (input, label) pairs; the collated batch is a "
                         f"{type(items).__name__}")
    return torch.as_tensor(items[0]), torch.as_tensor(items[1])


@dataclass
class StreamedSplit(Split):
    """The training split of a streamed source as the rest of a run sees it: `len` is the source's `size`; `x`
    and `example_y` hold its first samples (what a method's dry forwards are built on); `y` is None, since the
    labels are not held in memory."""

    size: int = 0
    example_y: Tensor | None = None

    def __len__(self) -> int:
        return self.size

    def batch(self, index: Tensor, x: Tensor | None = None, **fields: Any) -> Batch:
        y = None if self.example_y is None else self.example_y.index_select(0, index)
        return Batch(x=self.x.index_select(0, index) if x is None else x, y=y, index=index, **fields)


@dataclass(frozen=True, eq=False)
class StreamedBatches(Batches):
    """`Batches` whose training split is read from `stream`; every other split is drawn from memory as before."""

    stream: StreamSource | None = field(default=None)

    def loader(self, split: str, seed: int, rank: int = 0, world_size: int = 1) -> BatchIterator:
        if split != "train" or self.stream is None:
            return super().loader(split, seed, rank, world_size)
        stream = StreamIterator(self.stream, self.size, stream_seed(seed, split), split, rank, world_size)
        return stream  # type: ignore[return-value]  # BatchIterator's contract, for the engine


def stream_source(data: Dataset | DataLoader,  # type: ignore[type-arg]
                  workers: int = 0) -> tuple[StreamSource, int | None]:
    """The source a Dataset, an IterableDataset or a DataLoader describes, and the DataLoader's batch size (None
    for a dataset). A DataLoader gives its dataset, workers, collate function and pinning; its sampler is not
    used: the run's seeded order replaces it, so runs reproduce and resume. An IterableDataset without `len`
    is counted by reading it once."""
    if isinstance(data, DataLoader):
        loader = data
        return StreamSource(loader.dataset, _size(loader.dataset), loader.num_workers, loader.collate_fn,
                            loader.pin_memory), loader.batch_size
    if workers < 0:
        raise ConfigError(f"workers must be 0 or more, got {workers}")
    return StreamSource(data, _size(data), workers), None


def _size(dataset: Dataset) -> int:  # type: ignore[type-arg]
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:  # an IterableDataset without __len__: one pass, counted
        return sum(1 for _ in dataset)  # type: ignore[attr-defined]


def first_samples(source: StreamSource, n: int) -> tuple[Tensor, Tensor]:
    """The source's first `n` samples collated, read under a fixed seed (a method's example batch)."""
    with seeded(0):
        if source.iterable:
            it = iter(source.dataset)  # type: ignore[call-overload]
            items = [item for _, item in zip(range(n), it)]
        else:
            items = [source.dataset[i] for i in range(min(n, source.size))]
    if not items:
        raise ConfigError("the streamed training data holds no sample")
    collate = source.collate or torch.utils.data.default_collate
    return _pair(collate(items))


def streamed_split(source: StreamSource, example: tuple[Tensor, Tensor]) -> StreamedSplit:
    x, y = example
    return StreamedSplit(x=x.float() if x.is_floating_point() else x, size=source.size, example_y=y.long())
