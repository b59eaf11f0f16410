"""The deferred finiteness check (the training loop's on an accelerator), on the CPU: it names the first
non-finite step whatever comes after, and its per-step work allocates nothing (only in-place / out= ops)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kdforge.engine.finite import DeferredFinite


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_names_the_first_non_finite_step(bad: float) -> None:
    check = DeferredFinite(torch.device("cpu"))
    check.start(first_batch=3, first_step=40)
    for value in (1.0, 2.0, bad, 0.5, math.nan):  # later steps, finite or not, do not move it
        check.add(torch.tensor(value))
    assert check.first_bad() == (3 + 2, 40 + 2)
    check.start(first_batch=0, first_step=100)  # a new epoch starts clean
    for value in (1.0, -1e30, 0.0):
        check.add(torch.tensor(value, dtype=torch.float64))
    assert check.first_bad() is None and check.steps == 3


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_step_allocates_no_tensor() -> None:
    check = DeferredFinite(torch.device("cpu"))
    check.start(0, 0)
    check.add(torch.tensor(1.0))  # the first loss of a dtype makes its scratch scalars, once
    loss = torch.tensor(2.0, requires_grad=True) * 1
    with _Ops() as mode:
        check.add(loss)
    computing = [op for op in mode.ops if not op.startswith("aten.detach")]
    assert computing, "nothing was recorded: the check would pass vacuously"
    # an out= overload (abs.out, lt.Tensor_out) or an in-place op (logical_and_, add_): nothing new per step
    assert all(op.split(".")[2].endswith("out") or op.split(".")[1].endswith("_") for op in computing), computing
