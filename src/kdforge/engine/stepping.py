"""How a training step's loss becomes an optimizer step: numeric precision and gradient accumulation.

`train.precision`: fp32 runs exactly as before; bf16 runs the forward pass (the method's `training_step` up to its
backward) under `torch.autocast`, on the CPU as on CUDA, with weights, gradients and optimizer state in fp32; fp16
adds a `GradScaler` (dynamic loss scaling: fp16's narrow range would flush small gradients to 0), CUDA only.

`train.accumulate` = N: the epoch's batches are taken in groups of N micro-batches (the last group may be shorter);
gradients are zeroed at a group's first micro-batch, each micro-batch's loss is weighted by its share of the
group's samples (a per-batch mean over b samples, times b / group size, sums to the mean over the group), and the
optimizers and schedules step at the group's last one. For a loss that is a mean of per-sample terms this is
the step of one batch of the whole group, to float rounding. It is not for anything that looks at the batch as a
whole: BatchNorm in train mode normalises each micro-batch by its own statistics, and losses built on in-batch
relations or a memory bank (crd, rkd, sp, pkt) see N small batches instead of one. Checkpoints are only taken at
a group's end, where no gradient is pending, so a resumed run is exact.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdforge.errors import ConfigError

if TYPE_CHECKING:
    from kdforge.engine.contract import Optimization

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Stepping:
    """Where the current micro-batch sits in its accumulation group, and how to backpropagate and step at the
    run's precision. The defaults (fp32, no accumulation) are a plain `loss.backward()` and `optimizer.step()`."""

    def __init__(self, precision: str = "fp32", accumulate: int = 1, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"train.precision: fp16 needs a CUDA device (its loss scaling is CUDA's); this run is "
                              f"on {self.device.type}: use bf16 (autocast works on the CPU) or fp32")
        self.precision, self.accumulate = precision, accumulate
        self.dtype = DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.first = self.last = True  # the micro-batch opens / closes its group
        self.weight = 1.0  # its loss weight within the group, see `begin`

    def steps_per_epoch(self, batches: int) -> int:
        """Optimizer steps in an epoch of `batches` micro-batches."""
        return math.ceil(batches / self.accumulate)

    def autocast(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.dtype is None else torch.autocast(self.device.type, dtype=self.dtype)

    def begin(self, i: int, batches: int, global_size: Callable[[int], int], local: int, world: int) -> None:
        """Micro-batch `i` of an epoch of `batches`, holding `local` of `global_size(i)` samples on this process.
        Its loss weight, local * world / (the group's samples over all processes), also carries the processes'
        unequal shares that `grad_weight` carries without accumulation, so gradients are then summed plainly."""
        if self.accumulate == 1:
            return
        start = i - i % self.accumulate
        end = min(start + self.accumulate, batches)
        self.first, self.last = i == start, i + 1 == end
        self.weight = local * world / sum(global_size(j) for j in range(start, end))

    def reduce_weight(self, grad_weight: float) -> float:
        """The weight `runtime.average_gradients` takes at the group's end (see `begin`)."""
        return grad_weight if self.accumulate == 1 else 1.0

    def backward(self, loss: Tensor) -> None:
        if self.accumulate > 1:
            loss = loss * self.weight
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        # Backward outside autocast, as torch recommends: its ops follow the dtypes the forward chose anyway.
        with nullcontext() if self.dtype is None else torch.autocast(self.device.type, enabled=False):
            loss.backward()

    def step(self, opts: list["Optimization"]) -> None:
        """Step each optimizer and its schedule (through the scaler under fp16, which skips a step whose gradients
        overflowed), then let the scaler adapt its scale once."""
        for opt in opts:
            opt.step(self.scaler)
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs for an exact resume: the fp16 loss scale and its growth counter (nothing else:
        checkpoints are only taken at a group's end)."""
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
