"""BatchNorm over the global batch under torchrun, on any backend (gloo on CPU included).

In train mode each process would normalise by the statistics of its own shard, so N processes train a BatchNorm
model differently from one process on the whole batch (as DDP without SyncBatchNorm does). torch's
`nn.SyncBatchNorm` fixes that on GPUs only ("expected input tensor to be on GPU"); this does it with the runtime's
all-reduce: forward all-reduces the per-channel sums (mean, then centred squares: two passes, for precision),
backward the two sums the input gradient needs (Ioffe & Szegedy 2015, Alg. 1 and its gradient).

Shards of unequal size (a last partial batch) are handled the way the engine weights gradients: each process
backpropagates its own shard's mean loss and the engine averages parameter gradients with weights g_r = share * N,
so the gradient sums a process contributes are scaled by its g_r, and its input gradient divided by it.

Applied by `enable_sync_batchnorm(module, state)`, which swaps the `forward` of every BatchNorm submodule in place, so
hooks already registered on them (taps) stay. Eval-mode forwards and one-process runs use plain `F.batch_norm`.
"""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from kdforge.engine.runtime import Runtime


@dataclass
class SyncState:
    """What every synchronised BatchNorm of a run shares: the runtime, and this step's gradient weight g_r."""

    runtime: Runtime
    grad_weight: float = 1.0


def _shape(x: Tensor) -> tuple[list[int], list[int]]:
    """(dims reduced per channel, the broadcast shape of a per-channel vector)."""
    return [0, *range(2, x.dim())], [1, x.shape[1], *([1] * (x.dim() - 2))]


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                state: SyncState) -> tuple[Tensor, Tensor, Tensor]:
        dims, shape = _shape(x)
        rt = state.runtime
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        total = rt.all_reduce(local)
        n, mean = total[-1], total[:-1] / total[-1]
        centred = x - mean.view(shape)
        var = rt.all_reduce(centred.square().sum(dims)) / n
        invstd = (var + eps).rsqrt()
        xhat = centred * invstd.view(shape)
        y = xhat
        if weight is not None:
            y = y * weight.view(shape) + bias.view(shape)  # type: ignore[union-attr]
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.n, ctx.state = n, state
        unbiased = var * n / (n - 1).clamp(min=1)  # as running_var stores it
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(ctx: Any, dy: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        xhat, invstd, weight = ctx.saved_tensors
        dims, shape = _shape(dy)
        g = ctx.state.grad_weight
        s_dy, s_dy_xhat = dy.sum(dims), (dy * xhat).sum(dims)
        both = ctx.state.runtime.all_reduce(torch.cat([s_dy, s_dy_xhat]) * g) / g
        mean_dy, mean_dy_xhat = (both / ctx.n).chunk(2)
        scale = invstd if weight is None else invstd * weight
        dx = scale.view(shape) * (dy - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape))
        dw = s_dy_xhat if weight is not None else None
        db = s_dy if weight is not None else None
        return dx, dw, db, None, None


def _forward(self: _BatchNorm, x: Tensor) -> Tensor:
    state: SyncState = self._kdforge_sync  # type: ignore[assignment]
    if not (self.training and state.runtime.distributed):
        return self._kdforge_plain_forward(x)  # type: ignore[operator]
    self._check_input_dim(x)
    y, mean, var = _SyncBatchNorm.apply(x, self.weight, self.bias, self.eps, state)
    if self.track_running_stats and self.running_mean is not None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var, m)  # type: ignore[union-attr]
    return y


def enable_sync_batchnorm(module: nn.Module, state: SyncState) -> int:
    """Make every BatchNorm in `module` normalise over all processes' shards in train mode; the count."""
    count = 0
    for bn in module.modules():
        if isinstance(bn, _BatchNorm) and not hasattr(bn, "_kdforge_sync"):
            bn._kdforge_sync = state  # type: ignore[assignment]
            bn._kdforge_plain_forward = bn.forward  # type: ignore[assignment]
            bn.forward = types.MethodType(_forward, bn)  # type: ignore[method-assign]
            count += 1
    return count

