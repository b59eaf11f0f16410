"""Meta-gradients through unrolled training: K differentiable student steps, an outer objective after them, and
its gradient with respect to whatever shaped the inner loss (a learned loss network, per-sample weights, a
temperature, an architecture weight).

    result = unroll(student, inner_loss, steps=K, lr=0.1)            # K SGD steps, graph kept
    value = outer_loss(result.forward)                                # e.g. CE on a validation batch
    grads = torch.autograd.grad(value, hyper_params)                  # d outer / d hyper, through all K steps

The student's own parameters are never modified: the steps run functionally (`torch.func.functional_call`) on
copies that stay in the autograd graph, so the same start can be unrolled again (L2T-DLN unrolls twice). The
buffers (BatchNorm statistics) are copied too and updated only in the copies. Memory grows linearly with K
(every step's activations and its gradient graph are kept); `bench/meta_unroll.py` measures it.

Used by the methods that learn how to teach (L2T-DLN) and by bi-level searches (DFA's architecture weights).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
#: (forward through the current unrolled parameters, step index) -> the inner loss of that step.
InnerLoss = Callable[[Callable[..., Tensor], int], Tensor]


@dataclass
class Unrolled:
    """The state after K differentiable steps: parameters and buffers (both in the graph) and the inner losses."""

    module: nn.Module
    params: Params
    buffers: Params
    losses: list[Tensor]

    def forward(self, *args: Tensor) -> Tensor:
        """The module applied with the unrolled parameters (differentiable in them and in what produced them)."""
        return functional_call(self.module, (self.params, self.buffers), args)

    def commit(self) -> None:
        """Write the unrolled parameters and buffers into the module (detached): the steps become real."""
        with torch.no_grad():
            for name, value in self.params.items():
                self.module.get_parameter(name).copy_(value)
            for name, value in self.buffers.items():
                self.module.get_buffer(name).copy_(value)


def unroll(module: nn.Module, inner_loss: InnerLoss, steps: int, lr: float | Sequence[float],
           params: Params | None = None, create_graph: bool = True) -> Unrolled:
    """K plain SGD steps p <- p - lr_k * dL_k/dp on `inner_loss`, from `params` (default: the module's own
    trainable parameters, as leaves of the graph), keeping the graph of every step so an outer loss can be
    differentiated through all of them (`create_graph=False`: first-order, each step's gradient is a constant).
    """
    if steps < 1:
        raise ValueError(f"unroll needs at least one step, got {steps}")
    rates = [float(lr)] * steps if isinstance(lr, (int, float)) else [float(r) for r in lr]
    if len(rates) != steps:
        raise ValueError(f"{len(rates)} learning rates for {steps} steps")
    current = dict(params) if params is not None else {n: p for n, p in module.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    losses = []
    for k in range(steps):
        state = Unrolled(module, current, buffers, losses)
        loss = inner_loss(state.forward, k)
        names = list(current)
        grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=create_graph, allow_unused=True)
        current = {n: current[n] if g is None else current[n] - rates[k] * g for n, g in zip(names, grads)}
        losses.append(loss)
    return Unrolled(module, current, buffers, losses)


def meta_gradient(module: nn.Module, inner_loss: InnerLoss, outer_loss: Callable[[Callable[..., Tensor]], Tensor],
                  hyper: Sequence[Tensor], steps: int, lr: float | Sequence[float]) -> tuple[list[Tensor], Tensor, Unrolled]:
    """d outer_loss(after K steps) / d hyper, with the outer loss value and the unrolled state."""
    result = unroll(module, inner_loss, steps, lr)
    value = outer_loss(result.forward)
    grads = torch.autograd.grad(value, list(hyper), allow_unused=True)
    return [torch.zeros_like(h) if g is None else g for h, g in zip(hyper, grads)], value, result

