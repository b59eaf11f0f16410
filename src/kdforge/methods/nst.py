"""Neuron selectivity transfer (Huang & Wang 2017): match the distributions of channel activation patterns of
student and teacher layers by MMD with a polynomial kernel."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from kdforge.losses import nst_loss
from kdforge.methods.feature_pairs import FeaturePairMethod, LayerPairParams
from kdforge.registry import METHODS


class NSTParams(LayerPairParams):
    # Defaults are RepDistiller's NST run (scripts/run_cifar_distill.sh L27 @b84f547: -a 0 -b 50, -r 1);
    # mdistiller cfg.py L108-111 @a08d46f agrees.
    nst_weight: float = Field(50.0, ge=0, description="weight of the summed NST losses (RepDistiller's beta)")


@METHODS.register("nst")
class NST(FeaturePairMethod[NSTParams]):
    """{"ce", "nst"} (+ {"kd"}): nst_weight * sum of nst_loss over the layer pairs. RepDistiller pairs the output of
    every residual stage (helper/loops.py L139-143 @b84f547: feat[1:-1])."""

    term: ClassVar[str] = "nst"

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return nst_loss(student_feature, teacher_feature)
