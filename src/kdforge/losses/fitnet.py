"""FitNets hint loss."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hint_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, Eq. 3: distance between the teacher's hint
    u_h(x) and the regressed student guided layer r(v_g(x)); `student_feature` is already r(v_g(x)).

    Mean squared error over every element, as RepDistiller's `HintLoss` (nn.MSELoss) computes it.
    Deviation: the paper writes 1/2 * squared L2 norm (a sum per sample); the mean differs by a constant factor
    (2 / elements per batch) that the method's weight (RepDistiller's beta = 100) absorbs.
    Not positional: the mean squared error over every element; no class dim, `mask` or `reduction`
    (losses.common's layout rule is for logits).
    For token hidden states [B, L, D] padding counts too: index the kept tokens ([mask]) of both before calling.
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(f"hint_loss: student feature {tuple(student_feature.shape)} and teacher feature "
                         f"{tuple(teacher_feature.shape)} differ; regress the student's feature first")
    return F.mse_loss(student_feature, teacher_feature)
