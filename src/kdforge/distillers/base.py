"""The Distiller contract: a module whose training forward returns (student logits, {loss name: weighted term})."""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.losses import hard_cross_entropy
from kdforge.teachers.live import TeacherSource


class MethodParams(BaseModel):
    """Hyper-parameters of a method, validated from `method.params`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Distiller(nn.Module):
    """Base of every method. The engine sums the returned loss terms and knows nothing else of the method.

    Subclasses set `Params` (their hyper-parameters) and `needs_teacher`, and implement `forward_train`.
    Modules a method trains besides the student (connectors, projectors) are registered as submodules other
    than `student` and `teacher`; `trainable` collects them for the optimizer and for checkpoints.
    """

    Params: ClassVar[type[MethodParams]] = MethodParams
    needs_teacher: ClassVar[bool] = True

    def __init__(
        self,
        student: nn.Module,
        teacher: TeacherSource | None,
        params: MethodParams,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher")
        self.student = student
        # A live teacher is a submodule so that .to(device) moves it; it keeps itself in eval mode.
        self.teacher = teacher
        self.params = params
        self.label_smoothing = label_smoothing

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def forward_train(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def hard_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """CE on the batch's labels (mixed when mixup/cutmix ran), with the run's label smoothing."""
        return hard_cross_entropy(logits, batch.labels, self.label_smoothing)

    def student_and_teacher(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Student logits (with grad) and teacher logits (without) on the same view of the batch."""
        return self.student(batch.x), self.teacher.logits(batch)

    def trainable(self) -> nn.ModuleDict:
        """The modules whose parameters are optimized and checkpointed: the student and any connectors."""
        return nn.ModuleDict({name: m for name, m in self.named_children() if name != "teacher"})
