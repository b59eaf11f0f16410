"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match the normalized spatial attention maps of several
student and teacher layers."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field, PositiveInt
from torch import Tensor

from kdforge.losses import at_loss
from kdforge.methods.feature_pairs import FeaturePairMethod, LayerPairParams
from kdforge.registry import METHODS


class ATParams(LayerPairParams):
    # Defaults are RepDistiller's AT run (scripts/run_cifar_distill.sh L9 @b84f547: -a 0 -b 1000, -r 1 by default,
    # train_student.py L73) with Attention(p=2) (distiller_zoo/AT.py L11); mdistiller cfg.py L67-71 @a08d46f agrees.
    at_weight: float = Field(1000.0, ge=0, description="weight of the summed AT losses (RepDistiller's beta)")
    p: PositiveInt = Field(2, description="exponent of the attention map (channel mean of f^p)")


@METHODS.register("at")
class AT(FeaturePairMethod[ATParams]):
    """{"ce", "at"} (+ {"kd"}): at_weight * sum of at_loss over the layer pairs. RepDistiller pairs the output of
    every residual stage (helper/loops.py L134-138 @b84f547: feat[1:-1]); the maps may differ in channels and
    the larger is pooled to the smaller's size."""

    term: ClassVar[str] = "at"

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return at_loss(student_feature, teacher_feature, self.params.p)
