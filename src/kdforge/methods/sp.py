"""Similarity-preserving KD (Tung & Mori, ICCV 2019): match the batch's pairwise similarity matrices of student
and teacher layers."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from kdforge.losses import sp_loss
from kdforge.methods.feature_pairs import FeaturePairMethod, LayerPairParams
from kdforge.registry import METHODS


class SPParams(LayerPairParams):
    # Defaults are RepDistiller's SP run (scripts/run_cifar_distill.sh L11 @b84f547: -a 0 -b 3000, -r 1);
    # mdistiller cfg.py L120-123 @a08d46f agrees.
    sp_weight: float = Field(3000.0, ge=0, description="weight of the summed SP losses (RepDistiller's beta)")


@METHODS.register("sp")
class SP(FeaturePairMethod[SPParams]):
    """{"ce", "sp"} (+ {"kd"}): sp_weight * sum of sp_loss over the layer pairs. RepDistiller uses one pair, the
    output of the last residual stage (helper/loops.py L144-148 @b84f547: feat[-2]); any shapes compare."""

    term: ClassVar[str] = "sp"

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return sp_loss(student_feature, teacher_feature)
