"""Plain supervised training: the student alone on the hard labels. Also how teachers are trained."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.methods.base import Method, MethodParams
from kdforge.registry import METHODS


class CEParams(MethodParams):
    """No hyper-parameters: label smoothing comes from `train.label_smoothing`."""


@METHODS.register("ce")
class CE(Method[CEParams]):
    """{"ce": CE(student(x), labels)}, with the run's label smoothing and mixed labels when present."""

    needs_teacher: ClassVar[bool] = False

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        logits = batch.forward(self.student)
        return logits, {"ce": self.hard_loss(logits, batch)}
