"""The deferred finiteness check of the training loop on an accelerator: each step's loss is checked on the device
into preallocated flags (no host read, no new tensor per step), and read where the loop syncs anyway."""
from __future__ import annotations

import math

import torch
from torch import Tensor


class DeferredFinite:
    """Whether every loss since `start` was finite, and how many steps came before the first that was not.

    Per step, four in-place kernels on preallocated tensors: |loss| into a scratch scalar, `< inf` into a flag
    (False for NaN and ±inf), the flag and-ed into `ok`, `ok` added to `good`. `good` stops growing at the first
    non-finite step, so `first_bad()` names that step with a single host read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._ok = torch.ones((), dtype=torch.bool, device=device)
        self._flag = torch.ones((), dtype=torch.bool, device=device)
        self._good = torch.zeros((), dtype=torch.long, device=device)
        self._scratch: dict[torch.dtype, tuple[Tensor, Tensor]] = {}  # per loss dtype: (|loss|, inf)
        self.first_batch, self.first_step, self.steps = 0, 0, 0

    def start(self, first_batch: int, first_step: int) -> None:
        """A new stretch of steps (an epoch, or its rest after a resume) from its batch `first_batch`, which is
        global step `first_step`."""
        self._ok.fill_(True)
        self._good.zero_()
        self.first_batch, self.first_step, self.steps = first_batch, first_step, 0

    def add(self, loss: Tensor) -> None:
        """Record one step's loss (a scalar on `device`)."""
        if loss.dtype not in self._scratch:  # once per dtype: the scratch scalar and the bound it is compared to
            self._scratch[loss.dtype] = (torch.empty((), dtype=loss.dtype, device=self.device),
                                         torch.full((), math.inf, dtype=loss.dtype, device=self.device))
        magnitude, inf = self._scratch[loss.dtype]
        torch.abs(loss.detach(), out=magnitude)
        torch.lt(magnitude, inf, out=self._flag)
        self._ok.logical_and_(self._flag)
        self._good.add_(self._ok)
        self.steps += 1

    def first_bad(self) -> tuple[int, int] | None:
        """(batch within the epoch, global step) of the first non-finite loss since `start`, or None; one host
        read."""
        good = int(self._good)
        return None if good == self.steps else (self.first_batch + good, self.first_step + good)
