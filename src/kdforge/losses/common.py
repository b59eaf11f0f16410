"""Shared pieces of losses, written once: temperature softmax, KL, soft and hard cross-entropy for logits, and
the spatial matching of feature maps that AT and NST share.

Logits are [B, C] with classes on dim 1. Nothing here multiplies by T^2: the methods do, as their papers say.
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """Temperature-softened distribution softmax(z/T) (Hinton et al. 2015, Eq. 1)."""
    return F.softmax(logits / temperature, dim=1)


def kl_div_with_temperature(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    reduction: Literal["none", "batchmean"] = "none",
) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) per sample [B], or its batch mean; no T^2 factor.

    Both sides go through log_softmax (log_target=True) so a very peaked teacher gives no log(0).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    per_sample = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=1)
    return per_sample.mean() if reduction == "batchmean" else per_sample


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-sample CE of the student at T against the teacher's soft label: -sum_c p_t,c log p_s,c, shape [B].

    Equals KL(p_t || p_s) + H(p_t): same gradient in the student, larger value by the teacher's entropy.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    return -(soft_targets(teacher_logits, temperature) * log_p_student).sum(dim=1)


def hard_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    label_smoothing: float = 0.0,
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> Tensor:
    """CE against int64 class indices [B] or a float label distribution [B, C] (mixup/cutmix targets).

    F.cross_entropy takes both forms; with a distribution it computes -sum_c y_c log p_c per sample.
    """
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction=reduction)


def pool_to_common_size(student_feature: Tensor, teacher_feature: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """Feature maps [B, C, L] or [B, C, H, W] of one batch (channel counts may differ), each spatial dim of the
    larger map adaptive-average-pooled to the smaller's, as RepDistiller's `Attention.at_loss` and
    `NSTLoss.nst_loss` do before comparing maps; a ValueError naming `loss` for other shapes.

    The official code compares heights only and pools to a square (t_H, t_H); here each dim is pooled to the
    smaller of the two sizes, which is the same on the square maps the official code handles.
    """
    s, t = student_feature, teacher_feature
    if s.dim() not in (3, 4) or s.dim() != t.dim() or s.shape[0] != t.shape[0]:
        raise ValueError(f"{loss}: needs student and teacher feature maps [B, C, L] or [B, C, H, W] of one rank and "
                         f"batch; got {tuple(s.shape)} and {tuple(t.shape)}")
    size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:]))
    pool = F.adaptive_avg_pool1d if s.dim() == 3 else F.adaptive_avg_pool2d
    if tuple(s.shape[2:]) != size:
        s = pool(s, size)
    if tuple(t.shape[2:]) != size:
        t = pool(t, size)
    return s, t
