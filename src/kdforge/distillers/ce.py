"""Plain supervised training: the student alone on the hard labels. Also how teachers are trained."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from kdforge.data.types import Batch
from kdforge.distillers.base import Distiller, MethodParams
from kdforge.registry import METHODS


class CEParams(MethodParams):
    """No hyper-parameters: label smoothing comes from `train.label_smoothing`."""


@METHODS.register("ce")
class CEDistiller(Distiller):
    """{"ce": CE(student(x), labels)}, with the run's label smoothing and mixed labels when present."""

    Params: ClassVar[type[MethodParams]] = CEParams
    needs_teacher: ClassVar[bool] = False

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(batch.x)
        return logits, {"ce": self.hard_loss(logits, batch)}
