"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): match the cosine-kernel conditional
probabilities of the student's and teacher's embeddings."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from kdforge.losses import pkt_loss
from kdforge.methods.feature_pairs import EmbeddingPairParams, FeaturePairMethod
from kdforge.registry import METHODS


class PKTParams(EmbeddingPairParams):
    # Defaults are RepDistiller's PKT run (scripts/run_cifar_distill.sh L19 @b84f547: -a 0 -b 30000, -r 1) and
    # eps=1e-7 (distiller_zoo/PKT.py L17); mdistiller cfg.py L114-117 @a08d46f agrees.
    pkt_weight: float = Field(30000.0, ge=0, description="weight of the PKT loss (RepDistiller's beta)")
    eps: float = Field(1e-7, gt=0, description="added to the norms and inside the log, as officially")


@METHODS.register("pkt")
class PKT(FeaturePairMethod[PKTParams]):
    """{"ce", "pkt"} (+ {"kd"}): pkt_weight * pkt_loss of the two embeddings. As RepDistiller (helper/loops.py
    L153-156 @b84f547: feat[-1], the pooled input of the classifier; no projection, train_student.py L207-208),
    the embeddings may differ in size and nothing is trained besides the student."""

    term: ClassVar[str] = "pkt"

    def pair_loss(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        return pkt_loss(student_feature, teacher_feature, self.params.eps)
