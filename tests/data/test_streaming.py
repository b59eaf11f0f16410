"""The streaming path (kdforge.data.streaming): the in-memory iterator's order, seeds, resume position and
sharding, for map-style and iterable datasets, with per-sample random transforms and workers."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from kdforge.data.augment import AugmentSettings
from kdforge.data.loader import BatchIterator
from kdforge.data.streaming import StreamIterator, StreamSource, stream_source
from kdforge.data.types import Split

N, B = 53, 8


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, 2, 3, generator=g), torch.randint(0, 4, (N,), generator=g)


class Noisy(Dataset):
    """A map-style dataset with a random per-sample transform (noise from torch's global generator)."""

    def __init__(self) -> None:
        self.x, self.y = _data()

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        return self.x[i] + 0.1 * torch.randn(self.x[i].shape), self.y[i]


class NoisyStream(IterableDataset):
    """The same samples as a stream, in their own order, with the same random transform; records set_epoch."""

    def __init__(self) -> None:
        self.x, self.y = _data()
        self.epochs: list[int] = []

    def set_epoch(self, e: int) -> None:
        self.epochs.append(e)

    def __iter__(self):
        for i in range(N):
            yield self.x[i] + 0.1 * torch.randn(self.x[i].shape), self.y[i]


class SizedStream(NoisyStream):
    def __len__(self) -> int:
        return N


def _stream(dataset, workers: int = 0, rank: int = 0, world: int = 1) -> StreamIterator:
    return StreamIterator(StreamSource(dataset, N, workers), B, seed=7, rank=rank, world_size=world)


def _same(a, b) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert torch.equal(p.x, q.x) and torch.equal(p.y, q.y) and torch.equal(p.index, q.index)


@pytest.mark.parametrize("world", [1, 2])
def test_map_style_streams_exactly_the_in_memory_batches(world):
    x, y = _data()
    for rank in range(world):
        memory = BatchIterator(Split(x, y), B, 4, AugmentSettings(), seed=7, rank=rank, world_size=world)
        streamed = _stream(TensorDataset(x, y), rank=rank, world=world)
        assert len(streamed) == len(memory)
        for e in (0, 1):
            _same(list(streamed.epoch(e, start=2)), list(memory.epoch(e, start=2)))


def test_sharding_over_two_ranks_splits_each_global_batch():
    whole = list(_stream(Noisy()).epoch(0))
    parts = [list(_stream(Noisy(), rank=r, world=2).epoch(0)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for full, a, b in zip(whole, *parts):
        assert torch.equal(torch.cat([a.index, b.index]), full.index)  # disjoint, contiguous shares
        assert abs(len(a) - len(b)) <= 1
        assert torch.equal(torch.cat([a.x, b.x]), full.x)  # each sample's transform: same on any rank


def test_random_transforms_resume_and_workers_reproduce_and_leave_the_global_stream_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    full = list(_stream(Noisy()).epoch(1))
    assert torch.equal(torch.get_rng_state(), before)
    _same(list(_stream(Noisy()).epoch(1, start=3)), full[3:])
    _same(list(_stream(Noisy(), workers=2).epoch(1, start=3)), full[3:])
    other = list(_stream(Noisy()).epoch(2))
    assert not torch.equal(other[0].x, full[0].x)  # a new epoch: a new order and new draws


@pytest.mark.parametrize("world", [1, 2])
def test_iterable_resumes_at_its_position_and_shards(world):
    for rank in range(world):
        full = list(_stream(NoisyStream(), rank=rank, world=world).epoch(1))
        data = NoisyStream()
        _same(list(_stream(data, rank=rank, world=world).epoch(1, start=4)), full[4:])
        assert data.epochs == [1]
    if world == 2:
        whole = list(_stream(NoisyStream()).epoch(1))
        a, b = (list(_stream(NoisyStream(), rank=r, world=2).epoch(1)) for r in range(2))
        assert torch.equal(torch.cat([a[0].x, b[0].x]), whole[0].x)
        assert torch.equal(whole[0].index, torch.arange(B))


def test_sources_from_a_dataloader_and_an_iterable_without_len():
    loader = DataLoader(Noisy(), batch_size=16, shuffle=True, num_workers=0)
    source, size = stream_source(loader)
    assert size == 16 and source.size == N and source.dataset is loader.dataset
    assert stream_source(SizedStream())[0].size == N
    assert stream_source(NoisyStream())[0].size == N  # no len: counted by reading it once
