"""An epoch's running sums in the training loop: per-name loss and metric sums kept on the device (no read per
step), their means over the processes at the epoch's end, and the total loss of a step's terms."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdforge.engine.runtime import Runtime



def fresh_sums(device: torch.device) -> dict[str, Any]:
    """An epoch's running sums: per-name loss/metric sums and step counts, loss-term names, train hits."""
    return {"sums": {}, "counts": {}, "loss_names": {}, "correct": torch.zeros((), dtype=torch.long, device=device),
            "labeled": torch.zeros((), dtype=torch.long, device=device)}


def add_to(sums: dict[str, Tensor], name: str, value: Tensor) -> None:
    """sums[name] += value in place (no new tensor per step); the first value of an epoch, or a sum restored onto
    another device, starts a new one. The same float arithmetic as `sums.get(name, 0.0) + value`."""
    total = sums.get(name)
    if total is None:
        sums[name] = value.clone()
    elif total.device != value.device or total.dtype != value.dtype or total.requires_grad:
        sums[name] = total.to(value.device) + value
    else:
        total.add_(value)


def total_loss(terms: dict[str, Tensor]) -> Tensor:
    return sum(terms.values()) if terms else torch.zeros(())  # type: ignore[return-value]


def epoch_means(runtime: Runtime, sums: dict[str, Tensor], counts: dict[str, int],
                loss_names: dict[str, None]) -> dict[str, float]:
    """Each value's mean over the steps (of every process) that reported it; `loss` is the sum of the loss terms'
    means."""
    names = list(sums)
    if not names:
        return {"loss": 0.0}
    dev = runtime.device  # the sums live where the losses were computed; the counts join them there
    stacked = [torch.as_tensor(sums[n], dtype=torch.float64, device=dev) for n in names]
    stacked += [torch.tensor(float(counts[n]), dtype=torch.float64, device=dev) for n in names]
    total = runtime.all_reduce(torch.stack(stacked))
    means = {n: float(total[j]) / float(total[len(names) + j]) for j, n in enumerate(names)}
    return {"loss": sum(means[n] for n in loss_names), **means}
