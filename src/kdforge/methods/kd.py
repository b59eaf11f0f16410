"""Hinton et al. 2015 knowledge distillation: CE on the labels plus T^2-scaled KL to the teacher's soft labels."""
from __future__ import annotations


from pydantic import Field
from torch import Tensor

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.methods.base import MethodParams
from kdforge.methods.regularization import CountsRegularizationSamples, count_regularization_field
from kdforge.losses import kd_loss
from kdforge.registry import METHODS


class KDParams(MethodParams):
    # Defaults are the CIFAR-100 convention of RepDistiller / mdistiller (T=4, 0.1 CE + 0.9 KD),
    # the setting behind their published KD baselines.
    temperature: float = Field(4.0, gt=0, description="softmax temperature T of both soft labels")
    ce_weight: float = Field(0.1, ge=0, description="weight of the hard-label CE")
    kd_weight: float = Field(0.9, ge=0, description="weight of T^2 * KL(teacher || student)")
    count_regularization: bool = count_regularization_field()


@METHODS.register("kd")
class KD(CountsRegularizationSamples[KDParams]):
    """{"ce": ce_weight * CE, "kd": kd_weight * kd_loss}."""


    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        logits, teacher_logits = self.student_and_teacher(batch)
        self.count_regularization(logits, teacher_logits, batch, p.temperature)
        return logits, {
            "ce": p.ce_weight * self.hard_loss(logits, batch),
            "kd": p.kd_weight * kd_loss(logits, teacher_logits, p.temperature),
        }
