"""FitNets (Romero et al., ICLR 2015): a regressor maps a student layer onto a teacher's hint layer."""
from __future__ import annotations


from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.errors import at_key
from kdforge.losses import hint_loss
from kdforge.methods.base import LogitTermParams, Method, Setup
from kdforge.methods.connectors import connector
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class FitNetParams(LogitTermParams):
    # Defaults are RepDistiller's FitNet run (train_student.py --distill hint -r 1 -a 0 -b 100): CE + 100 * hint,
    # trained jointly; the teacher's hint layer is the output of its second stage (hint_layer = 2).
    student_layer: str = Field(description="module path of the student's guided layer, e.g. layer2")
    teacher_layer: str = Field(description="module path of the teacher's hint layer, e.g. layer2")
    hint_weight: float = Field(100.0, ge=0, description="weight of the hint loss (RepDistiller's beta)")
    hint_epochs: int = Field(0, ge=0, description="first epochs trained on the hint loss alone (the paper's stage 1)")


@METHODS.register("fitnet")
class FitNet(Method[FitNetParams]):
    """Epochs < hint_epochs: {"hint"}; then {"ce", "hint"} plus {"kd"} when kd_weight > 0.

    Stage 1 of the paper trains the student up to the guided layer and the regressor on the hint alone; the rest
    of the student gets no gradient from it, so optimizing the hint term alone is that stage. Deviation: the
    paper's stage 2 is KD alone; here the hint term stays (as RepDistiller trains FitNet), and `hint_epochs=0`
    (the default) is RepDistiller's joint training.
    """


    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: FitNetParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        self.taps, (s_shape,), (t_shape,) = self.tap_layers(
            [params.student_layer], [params.teacher_layer], "method.params.student_layer", "method.params.teacher_layer")
        with at_key("method.params"):
            self.connector = connector(s_shape, t_shape)

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        logits, features = self.student_with_features(batch, self.taps)
        teacher = self.teacher_outputs(batch)
        hint = p.hint_weight * hint_loss(self.connector(features[p.student_layer]), teacher.features[p.teacher_layer])
        if ctx is not None and ctx.epoch < p.hint_epochs:
            return logits, {"hint": hint}
        return logits, {**self.logit_terms(logits, batch, p, teacher.logits),
                        "hint": hint}
