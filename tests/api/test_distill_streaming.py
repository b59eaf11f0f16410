"""distill() streams a DataLoader, an IterableDataset or any data with streaming=True (instead of refusing them),
with the in-memory path's seeds and exact resume."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import kdforge
from kdforge.config.schema import AugmentConfig
from kdforge.errors import ConfigError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


def _fresh() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


class Jitter(Dataset):
    """digits with a random per-sample transform; `stop_at` emulates a kill: the read that raises."""

    def __init__(self, split, stop_at: int | None = None) -> None:
        self.x, self.y, self.stop_at, self.reads = split.x, split.y, stop_at, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.stop_at:
            raise KeyboardInterrupt("killed")
        return self.x[i] + 0.05 * torch.randn(self.x[i].shape), self.y[i]


class Stream(IterableDataset):
    def __init__(self, split) -> None:
        self.x, self.y = split.x, split.y

    def __iter__(self):
        return zip(self.x, self.y)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def _run(train, run_dir, **kw):
    student = _fresh()
    result = kdforge.distill(student, None, train, method="ce", epochs=2, batch_size=64, run_dir=run_dir,
                             tensorboard=False, **kw)
    return student, result


def test_streamed_tensors_train_exactly_as_in_memory(digits, tmp_path):
    memory, _ = _run((digits.train.x, digits.train.y), tmp_path / "m")
    streamed, _ = _run(TensorDataset(digits.train.x, digits.train.y), tmp_path / "s", streaming=True)
    assert all(torch.equal(a, b) for a, b in zip(_weights(memory), _weights(streamed)))


def test_iterable_dataset_and_dataloader_are_streamed_not_refused(digits, tmp_path):
    _, result = _run(Stream(digits.train), tmp_path / "it", test=Stream(digits.test))
    assert result.test["top1"] > 0.3 and (tmp_path / "it" / "summary.json").exists()
    loader = DataLoader(Jitter(digits.train), batch_size=32, shuffle=True, num_workers=2)
    _, result = _run(loader, tmp_path / "dl", test=(digits.test.x, digits.test.y))
    assert result.steps == 2 * -(-len(digits.train) // 32)  # the DataLoader's batch size is the run's


def test_killed_streamed_run_resumes_bit_for_bit(digits, tmp_path):
    stream = {"streaming": True, "checkpoint_steps": 3}  # a map-style Dataset is stacked unless streamed
    whole, _ = _run(Jitter(digits.train), tmp_path / "whole", **stream)
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 1, after mid-epoch checkpoints
        _run(Jitter(digits.train, stop_at=8 + len(digits.train) + 5 * 64 + 10), tmp_path / "cut", **stream)
    assert (tmp_path / "cut" / "checkpoints" / "epoch_0001_batch_000003").exists()
    resumed, result = _run(Jitter(digits.train), tmp_path / "cut", resume=True, **stream)
    assert result.resumed_from is not None
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole), _weights(resumed)))


@pytest.mark.parametrize("kw, words", [
    ({"streaming": False, "train": "loader"}, "is read by streaming"),
    ({"streaming": True, "augment": AugmentConfig(flip=True)}, "per-sample transform"),
])
def test_streaming_refusals_are_one_line(digits, tmp_path, kw, words):
    train = DataLoader(TensorDataset(digits.train.x, digits.train.y), batch_size=32) if kw.pop("train", None) \
        else TensorDataset(digits.train.x, digits.train.y)
    with pytest.raises(ConfigError, match=words):
        _run(train, tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()
