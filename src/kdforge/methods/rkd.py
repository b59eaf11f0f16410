"""Relational KD (Park et al., CVPR 2019): match the distance-wise and angle-wise relations within the batch of
the student's and teacher's embeddings."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from kdforge.losses import rkd_loss
from kdforge.methods.feature_pairs import EmbeddingPairParams, FeaturePairMethod
from kdforge.registry import METHODS


class RKDParams(EmbeddingPairParams):
    # Defaults are RepDistiller's RKD run (scripts/run_cifar_distill.sh L17 @b84f547: -a 0 -b 1, -r 1) with
    # RKDLoss(w_d=25, w_a=50) (distiller_zoo/RKD.py L10); mdistiller cfg.py L74-82 @a08d46f agrees.
    rkd_weight: float = Field(1.0, ge=0, description="weight of the RKD loss (RepDistiller's beta)")
    distance_weight: float = Field(25.0, ge=0, description="weight of the distance-wise term (w_d)")
    angle_weight: float = Field(50.0, ge=0, description="weight of the angle-wise term (w_a)")


@METHODS.register("rkd")
class RKD(FeaturePairMethod[RKDParams]):
    """{"ce", "rkd"} (+ {"kd"}): rkd_weight * rkd_loss of the two embeddings. As RepDistiller (helper/loops.py
    L149-152 @b84f547: feat[-1], the pooled input of the classifier; no projection, train_student.py L205-206),
    the embeddings may differ in size and nothing is trained besides the student."""

    term: ClassVar[str] = "rkd"

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return rkd_loss(student_feature, teacher_feature, self.params.distance_weight, self.params.angle_weight)
