"""Shared pieces of logit losses: temperature softmax, KL, soft and hard cross-entropy, written once.

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
