"""Decoupled KD (Zhao et al., CVPR 2022): CE plus alpha * TCKD + beta * NCKD, ramped in over the first epochs."""
from __future__ import annotations


from pydantic import Field
from torch import Tensor

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.losses import dkd_loss
from kdforge.methods.base import LogitTermParams, Method
from kdforge.registry import METHODS


class DKDParams(LogitTermParams):
    # Defaults are mdistiller's (mdistiller/engine/cfg.py L161-167 @a08d46f: CE_WEIGHT 1, ALPHA 1, BETA 8, T 4,
    # WARMUP 20), the CIFAR-100 setting of its configs/cifar100/dkd/*.yaml.
    alpha: float = Field(1.0, ge=0, description="weight of TCKD (target vs non-target binary KD)")
    beta: float = Field(8.0, ge=0, description="weight of NCKD (KD among the non-target classes)")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of DKD (and of the KD term)")
    warmup: int = Field(20, ge=0, description="epochs over which the DKD weight ramps linearly to 1 (0: none)")


@METHODS.register("dkd")
class DKD(Method[DKDParams]):
    """{"ce": ce_weight * CE, "dkd": min((epoch + 1) / warmup, 1) * dkd_loss} (+ {"kd"} when kd_weight > 0).

    As mdistiller's `DKD.forward_train` (mdistiller/distillers/DKD.py L65-84 @a08d46f), whose epochs count from 1
    (engine/trainer.py L78): the first epoch (ctx.epoch 0) has weight 1 / warmup. Outside training (no ctx) the
    weight is 1. Mixed labels (mixup/cutmix): CE uses the distribution; DKD's target class is its argmax
    (Deviation: mdistiller has no mixing; `dkd_loss` itself refuses a distribution).
    """


    def warmup_weight(self, ctx: StepContext | None) -> float:
        p = self.params
        if ctx is None or p.warmup == 0:
            return 1.0
        return min((ctx.epoch + 1) / p.warmup, 1.0)

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        logits, teacher_logits = self.student_and_teacher(batch)
        labels = batch.labels
        target = labels.argmax(dim=1) if labels.is_floating_point() else labels
        terms = self.logit_terms(logits, batch, p, teacher_logits)
        terms["dkd"] = self.warmup_weight(ctx) * dkd_loss(logits, teacher_logits, target, p.alpha, p.beta,
                                                          p.temperature)
        return logits, terms
