"""SLaM (Kontonis et al., NeurIPS 2023): the teacher's pseudo-labels on unlabeled data, fitted through the mixing
of the student's own prediction, mix(f; α, k) (losses/slam.py has the equations and the choices made)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor

from kdforge.losses import (
    choose_k, fit_isotonic, isotonic_predict, slam_loss, teacher_confidence, top_k_accuracy_curve,
)
from kdforge.methods.base import MethodParams
from kdforge.methods.unlabeled import CalibratedParams, UnlabeledMethod
from kdforge.registry import METHODS


class SLaMParams(CalibratedParams):
    confidence: Literal["margin", "max_prob"] = Field("margin", description="teacher score α(x) is monotone in: "
                                                      "top-1 minus top-2 probability, or top-1 probability")
    topk_target: float = Field(0.9, gt=0, le=1, description="k = smallest k >= 2 whose validation top-k accuracy "
                                                            "reaches this")
    normalize: bool = Field(False, description="divide the wrong-label term by k - 1 (the theory's form); the "
                                               "paper's experiments do not (Remark B.1)")
    hard_target: bool = Field(False, description="the teacher's one-hot top-1 as target instead of its softmax")


@METHODS.register("slam")
class SLaM(UnlabeledMethod):
    """Labeled CE plus slam_loss on unlabeled batches, with α(x) isotonic in the teacher's confidence and k fitted
    on validation data at the first step."""

    Params: ClassVar[type[MethodParams]] = SLaMParams
    params: SLaMParams
    calibrates: ClassVar[bool] = True
    calibration_target: ClassVar[str] = "α(x) and k"

    def calibrate(self, val_logits: Tensor, val_labels: Tensor) -> dict[str, float]:
        p = self.params
        correct = val_logits.argmax(1).eq(val_labels).float()
        self.knots = fit_isotonic(teacher_confidence(val_logits, p.confidence), correct)
        self.k = choose_k(top_k_accuracy_curve(val_logits, val_labels), p.topk_target)
        return {"slam_k": float(self.k), "slam_alpha_min": float(self.knots[1][0]),
                "slam_alpha_max": float(self.knots[1][-1])}

    def alpha(self, teacher_logits: Tensor) -> Tensor:
        """α(x): the fitted probability that the teacher's top-1 class is right, per sample [B]."""
        return isotonic_predict(*self.knots, teacher_confidence(teacher_logits, self.params.confidence))

    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        alpha = self.alpha(teacher_logits)
        loss = slam_loss(student_logits, teacher_logits, alpha, self.k, p.normalize, p.hard_target)
        return loss, {"alpha": alpha.mean()}
