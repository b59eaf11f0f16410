"""A teacher model run on each batch, in eval mode and without gradients."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kdforge.data.types import Batch, logits_of
from kdforge.models.taps import Taps
from kdforge.registry import TEACHERS
from kdforge.teachers.base import TeacherOutput

if TYPE_CHECKING:
    from kdforge.teachers.cache import CacheSettings


@TEACHERS.register("live")
class LiveTeacher(nn.Module):
    """Runs a trained model on every batch, in eval mode whatever `train()` is called with, without gradients.

    The caller's module is left as it was found: `release()` restores its train/eval mode (the API calls it
    when a run ends), and `requires_grad` is never touched (outputs are computed under `no_grad`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._was_training = model.training
        self.model = model.eval()
        self.taps = Taps(model)

    @classmethod
    def from_model(cls, model: nn.Module, cache: "CacheSettings | None" = None) -> "LiveTeacher":
        """How the API builds every registered source: from the teacher model (and the cache settings, which a
        live source does not use)."""
        return cls(model)

    @property
    def network(self) -> nn.Module:
        """The teacher model this source runs."""
        return self.model

    def train(self, mode: bool = True) -> "LiveTeacher":
        return super().train(False)

    def release(self) -> nn.Module:
        """Remove the feature hooks and give the model back in the mode it came in."""
        self.taps.remove()
        return self.model.train(self._was_training)

    def tap(self, paths: Sequence[str]) -> None:
        self.taps.add(paths)

    @torch.no_grad()
    def outputs(self, batch: Batch) -> TeacherOutput:
        with self.taps.capture() as features:
            logits = batch.forward(self.model)
        return TeacherOutput(logits=logits, features={k: batch.rows(v) for k, v in features.items()})

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return logits_of(self.model(x))
