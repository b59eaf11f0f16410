"""One object for everything that depends on how many processes run: rank, world size, device, reductions.

One process by default; under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) it joins the process
group. Code that writes files asks `is_main`; code that sums over samples all-reduces through it, so nothing in
the engine assumes a single process.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from kdforge.errors import ConfigError

ReduceOp = Literal["sum", "max", "min"]
_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA when present, one GPU per local rank, else CPU), 'cpu', 'cuda' or 'cuda:i'; a device that is
    not there is a ConfigError naming `train.device`."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but this machine has no CUDA device; use 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        raise ConfigError(f"train.device={name!r}: only 'auto', 'cpu' and 'cuda[:i]' are supported")
    return device


def _leave_group() -> None:
    if dist.is_initialized():
        try:  # no barrier: a process leaving on an error must not wait for the others (torchrun stops them)
            dist.destroy_process_group()
        except (RuntimeError, ValueError):
            pass


_WATCHING = False


def _stop_with_launcher(poll_s: float = 0.2) -> None:
    """End this worker when the torchrun agent that started it dies.

    torchrun starts each worker in a session of its own, so a SIGKILL of the agent (an OOM kill, `kill -9`, a
    scheduler stopping only the launcher) leaves the workers running as orphans: they keep training, keep the run
    folder's lock and write checkpoints under a resume. Orphaning is seen as a change of parent pid."""
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING, launcher = True, os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        print(f"kdforge: the torchrun launcher (pid {launcher}) is gone; stopping this worker (pid {os.getpid()})",
              file=sys.stderr, flush=True)
        os._exit(1)  # no clean-up: the peers are going too, and checkpoints are atomic

    threading.Thread(target=watch, name="kdforge-launcher-watch", daemon=True).start()


@dataclass(frozen=True)
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (checkpoints, logs, saved models, summaries)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> "Runtime":
        """One process unless torchrun's variables are set; then the process group is joined (gloo on CPU,
        nccl on CUDA) if the caller has not done so already."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        resolved = resolve_device(device, local)
        if "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun's agent for its workers
            _stop_with_launcher()
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
            # Leave the group cleanly at exit: a gloo group torn down by interpreter shutdown while its peer is
            # closing can abort the process (SIGABRT) after all the work is done.
            atexit.register(_leave_group)
        return cls(rank=rank, world_size=world, local_rank=local, device=resolved)

    def all_reduce(self, tensor: Tensor, op: ReduceOp = "sum") -> Tensor:
        """`tensor` reduced over all processes (a new tensor; the argument is left as it was)."""
        out = tensor.detach().clone()
        if self.distributed:
            dist.all_reduce(out, op=_OPS[op])
        return out

    def average_gradients(self, params: Sequence[Tensor], weight: float = 1.0) -> None:
        """Replace each parameter's gradient by the `weight`-weighted mean over processes, in one flat all-reduce.

        What DistributedDataParallel does after backward (without overlapping it with backward): done here
        because a method owns its step (several optimizers, unrolled inner steps through functional calls) and
        DDP only reduces what runs through its wrapper's forward. A parameter with no gradient on some process
        gets zeros there; one with no gradient anywhere keeps None, so the optimizer skips it as on one process.
        """
        if not self.distributed:
            return
        params = list(dict.fromkeys(params))  # a parameter shared by two optimizers is reduced once
        has = self.all_reduce(torch.tensor([p.grad is not None for p in params], dtype=torch.int32))
        live = [p for p, n in zip(params, has.tolist()) if n]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not live:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in live]) * weight
        dist.all_reduce(flat)
        flat /= self.world_size
        for p, g in zip(live, flat.split([p.numel() for p in live])):
            p.grad.copy_(g.view_as(p.grad))

    def broadcast_(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite `tensors` in place with the main process's values (weights at start, BatchNorm statistics)."""
        if self.distributed:
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every process's `obj`, in rank order, on the main process (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()
