"""A teacher model run on each batch, in eval mode and without gradients."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from kdforge.data.types import Batch


class TeacherSource(Protocol):
    """Anything that gives the teacher's logits for a training batch (live model or cache keyed by batch.index)."""

    def logits(self, batch: Batch) -> Tensor: ...


class LiveTeacher(nn.Module):
    """Wraps a trained model; stays in eval mode whatever `train()` is called with, and never tracks gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "LiveTeacher":
        return super().train(False)

    @torch.no_grad()
    def logits(self, batch: Batch) -> Tensor:
        return self.model(batch.x)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
