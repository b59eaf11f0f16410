"""Weighted Soft Labels (Zhou et al., ICLR 2021): CE on the labels plus the per-sample weighted soft-label term."""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.methods.base import MethodParams
from kdforge.methods.regularization import CountsRegularizationSamples, count_regularization_field
from kdforge.losses import regularization_samples, wsl_loss
from kdforge.losses.common import soft_cross_entropy
from kdforge.registry import METHODS


class WSLParams(MethodParams):
    # Defaults of the official code (knowledge_distiller.py L40-41: T = 2, alpha = 2.5; hard loss unweighted).
    temperature: float = Field(2.0, gt=0, description="softmax temperature T of the soft-label term")
    alpha: float = Field(2.5, ge=0, description="weight of the weighted soft-label term")
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label CE")
    weighting: Literal["wsl", "uniform", "filter"] = Field("wsl", description=(
        "the per-sample weights w_i = 1 - exp(-L_s / L_t) (wsl), or every w_i = 1 (uniform): the control that "
        "keeps WSL's recipe (T, alpha, CE weight) and removes its mechanism, i.e. KD at T with weight alpha; or "
        "filter: w_i = 0 on the regularization samples (CE(s/T_f, y) < CE(t/T_f, y), T_f = filter_temperature), "
        "1 elsewhere: Zhou et al.'s 'completely filtering out regularization samples'"))
    filter_temperature: float = Field(1.0, gt=0, description=(
        "weighting filter: the temperature the regularization samples are found at; 1 (D1') is the boundary of "
        "WSL's weight (w_i < 1 - 1/e), the distillation T gives kdforge's counted reading (D1)"))
    count_regularization: bool = count_regularization_field()


@METHODS.register("wsl")
class WSL(CountsRegularizationSamples[WSLParams]):
    """{"ce": ce_weight * CE, "wsl": alpha * wsl_loss}."""


    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        logits, teacher_logits = self.student_and_teacher(batch)
        self.count_regularization(logits, teacher_logits, batch, p.temperature)
        if p.weighting == "wsl":
            soft = wsl_loss(logits, teacher_logits, batch.labels, p.temperature)
        else:  # the same term with every weight 1: T^2 * mean soft CE (KL's gradient, larger by H(p_t))
            per_sample = soft_cross_entropy(logits, teacher_logits, p.temperature)
            if p.weighting == "filter":  # weight 0 on regularization samples; still the mean over the whole batch
                keep = ~regularization_samples(logits, teacher_logits, batch.labels, p.filter_temperature)
                per_sample = per_sample * keep.to(per_sample.dtype)
            soft = p.temperature**2 * per_sample.mean()
        return logits, {"ce": p.ce_weight * self.hard_loss(logits, batch), "wsl": p.alpha * soft}
