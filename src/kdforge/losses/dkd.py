"""Decoupled Knowledge Distillation (DKD): KD split into a target-class and a non-target-class term.

Follows the authors' code, megvii-research/mdistiller@a08d46f10d6102bd6e3f258ca5ac880b020ea259
`mdistiller/distillers/DKD.py` L8-51 (`dkd_loss`, `_get_gt_mask`, `_get_other_mask`, `cat_mask`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import Positions, Reduction, kl_div_with_temperature

# Official L22/L25: subtracted from the target class's scaled logit so that its softmax weight is exp(-1000) = 0
# (in float32 and float64): the softmax over the non-target classes alone, p-hat of the paper.
_MASK_LOGIT = 1000.0


def _label_rows(pos: Positions, labels: Tensor) -> Tensor:
    if labels.is_floating_point() or labels.shape != pos.shape:
        raise ValueError(
            f"dkd_loss needs int64 class indices of the positions' shape {tuple(pos.shape)} (got {labels.dtype} "
            f"{tuple(labels.shape)}): the target/non-target split needs one target class per sample; for a mixed "
            "label distribution pass labels.argmax(dim=1)")
    return pos.values(labels)


def _dkd_rows(student: Tensor, teacher: Tensor, labels: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    gt = F.one_hot(labels, student.shape[1]).bool()
    p_s = F.softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    # cat_mask (L47-51): [p_target, sum of the others]; the official sums p * other_mask, not 1 - p_target.
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
    # F.kl_div(log b_s, b_t) = sum b_t (log b_t - log b_s), with 0 log 0 = 0 (as torch.xlogy)
    tckd = (torch.xlogy(b_t, b_t) - b_t * torch.log(b_s)).sum(1)
    shift = _MASK_LOGIT * gt
    nckd = kl_div_with_temperature(student - temperature * shift, teacher - temperature * shift, temperature)
    return temperature**2 * tckd, temperature**2 * nckd


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float = 4.0, *,
              dim: int | None = None) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD) per position ([B] each for [B, C]), both times T^2 (the unweighted terms of `dkd_loss`).

    TCKD = KL(b^T || b^S) on the binary [p_target, 1 - p_target] at temperature T (official L9-20);
    NCKD = KL(p-hat^T || p-hat^S) on the softmax over the non-target classes (official L21-31).
    Classes on the last dim unless `dim` (losses.common's rule); `labels` int64 of the positions' shape.
    """
    pos = Positions(student_logits, dim, None, "dkd_terms")
    tckd, nckd = _dkd_rows(pos.rows(student_logits), pos.rows(teacher_logits), _label_rows(pos, labels), temperature)
    return pos.reduce(tckd, "none"), pos.reduce(nckd, "none")


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0, *, mask: Tensor | None = None, reduction: Reduction = "mean",
             dim: int | None = None) -> Tensor:
    """Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022, Sec. 3.2, Eq. 8: alpha * TCKD + beta * NCKD.

    Mean over positions (the official sums and divides by the batch size, L17-19/L28-30) of alpha * TCKD +
    beta * NCKD from `dkd_terms`. With alpha = 1 and beta = 1 - p_target^T per sample it is classical KD (Sec. 3.1,
    Eq. 7: KD = TCKD + (1 - p_target^T) NCKD).
    `labels` are int64 class indices of the positions' shape ([B], or [B, L] for token logits [B, L, V]); a float
    label distribution is refused (ValueError): the decoupling needs one target class, and the caller decides which
    (the `dkd` method takes the mixed target's argmax). Layout, `mask` and `reduction` ("mean" | "sum" | "none"):
    losses.common's rule, classes on the last dim unless `dim`.
    Deviation: the NCKD softmaxes use log_softmax on both sides where the official takes softmax for the teacher
    (same value; finite for a very peaked teacher); TCKD uses 0 log 0 = 0 as F.kl_div does.
    """
    pos = Positions(student_logits, dim, mask, "dkd_loss")
    tckd, nckd = _dkd_rows(pos.rows(student_logits), pos.rows(teacher_logits), _label_rows(pos, labels), temperature)
    return pos.reduce(alpha * tckd + beta * nckd, reduction)
