"""Synchronised BatchNorm on gloo (CPU): two processes holding unequal shards (5 and 3 rows of 8) of one batch give
the outputs, running statistics and (engine-averaged) gradients that one process gets on the whole batch."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from kdforge.engine.runtime import Runtime
from kdforge.engine.syncbn import SyncState, enable_sync_batchnorm

ROWS = [slice(0, 5), slice(5, 8)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 4))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64) * 3 + 1, torch.randint(0, 4, (8,), generator=g)


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    nn.functional.cross_entropy(out, y).backward()
    return out.detach()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        rt = Runtime(rank=rank, world_size=2)
        model = _model().double()
        state = SyncState(rt, grad_weight=(ROWS[rank].stop - ROWS[rank].start) * 2 / 8)  # the engine's share * N
        assert enable_sync_batchnorm(model, state) == 1
        x, y = _data()
        out = _step(model, x[ROWS[rank]], y[ROWS[rank]])
        rt.average_gradients(list(model.parameters()), state.grad_weight)
        torch.save({"out": out, "grads": [p.grad for p in model.parameters()],
                    "running": [model[1].running_mean, model[1].running_var]}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_unequal_shards_match_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    model = _model().double()
    x, y = _data()
    out = _step(model, x, y)
    assert torch.allclose(torch.cat([r["out"] for r in ranks]), out, atol=1e-12)
    for r in ranks:
        assert all(torch.allclose(a, p.grad, atol=1e-12) for a, p in zip(r["grads"], model.parameters()))
        assert torch.allclose(r["running"][0], model[1].running_mean) and torch.allclose(r["running"][1],
                                                                                         model[1].running_var)
    # without the synchronisation the shards' own statistics give other outputs: the test can fail
    plain = _model().double()
    shard = plain(x[ROWS[1]]).detach()
    assert not torch.allclose(shard, out[ROWS[1]], atol=1e-3)
