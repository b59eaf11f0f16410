"""Weighted Soft Labels (WSL): the soft-label term re-weighted per sample by how the student fares vs the teacher.

Follows the authors' code, bellymonster/Weighted-Soft-Label-Distillation `knowledge_distiller.py` L58-79
(class WSLDistiller.forward).
"""
from __future__ import annotations

import torch
from torch import Tensor

from kdforge.losses.common import Positions, Reduction, hard_cross_entropy, soft_cross_entropy

# Official code L73: keeps the ratio finite when the teacher is (numerically) perfect on a sample.
_RATIO_EPS = 1e-7


def _weight_rows(student_rows: Tensor, teacher_rows: Tensor, targets: Tensor) -> Tensor:
    ce_student = hard_cross_entropy(student_rows.detach(), targets, reduction="none")
    ce_teacher = hard_cross_entropy(teacher_rows.detach(), targets, reduction="none")
    # The clamp at 0 is the official L74-75; CEs are >= 0 so it only guards rounding.
    ratio = (ce_student / (ce_teacher + _RATIO_EPS)).clamp_min(0.0)
    return 1.0 - torch.exp(-ratio)


def wsl_weights(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, dim: int | None = None) -> Tensor:
    """Zhou et al., ICLR 2021, Sec. 4: w_i = 1 - exp(-L_ce^s,i / L_ce^t,i), per position ([B] for [B, C]), without
    gradient.

    Both CEs are at T = 1 on detached logits (official L65-76): w -> 0 where the student already fits the
    label better than the teacher (a "regularization sample"), w -> 1 where it is far worse.
    `labels` are int64 indices (the positions' shape) or a float distribution of the logits' shape (mixup); the CEs
    then use the distribution. Classes on the last dim unless `dim` (losses.common's rule; no mask or reduction:
    one weight per position).
    """
    pos = Positions(student_logits, dim, None, "wsl_weights")
    weights = _weight_rows(pos.rows(student_logits), pos.rows(teacher_logits), pos.targets(labels))
    return pos.reduce(weights, "none")


def wsl_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float = 2.0, *,
             mask: Tensor | None = None, reduction: Reduction = "mean", dim: int | None = None) -> Tensor:
    """Zhou et al., "Rethinking Soft Labels for KD: a Bias-Variance Tradeoff Perspective", ICLR 2021, Sec. 4, L_wsl.

    T^2 * mean_i( w_i * CE(softmax(t_i/T), softmax(s_i/T)) ), the soft term alone (the method adds CE and alpha).
    As in the official code the soft term is the cross-entropy with the teacher's soft label, not KL: equal
    gradient in the student, value larger by the teacher's entropy H(softmax(t/T)).
    Layout: i runs over the positions (classes on the last dim, `dim=` for another; [B, L, V] with labels [B, L]
    weighs each token); `mask` keeps positions; `reduction` "mean" | "sum" | "none" (losses.common's rule).
    Deviation: float label distributions (mixup/cutmix) are accepted in the weight's CEs; the official code
    takes int labels only (one_hot), and reduces to this for one-hot distributions.
    """
    pos = Positions(student_logits, dim, mask, "wsl_loss")
    s, t = pos.rows(student_logits), pos.rows(teacher_logits)
    weights = _weight_rows(s, t, pos.targets(labels))
    return temperature**2 * pos.reduce(weights * soft_cross_entropy(s, t, temperature), reduction)


def regularization_samples(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                           temperature: float = 1.0, *, dim: int | None = None) -> Tensor:
    """Zhou et al., ICLR 2021, Sec. 3.2: the "regularization samples" of a distillation batch, a bool per position
    ([B] for [B, C]; classes on the last dim unless `dim`).

    A sample is one when the student already fits its label better than the teacher, CE(s/T, y) < CE(t/T, y)
    (equivalently p_s,y > p_t,y for int labels): there the soft label pulls the student away from the label
    (bias up) while smoothing it (variance down). These are the samples WSL's weight w_i = 1 - exp(-L_s / L_t)
    pushes below 1 - 1/e. No gradient. `labels` are int64 indices or a float distribution of the logits' shape.
    Deviation: the paper's text defining the criterion was not available here; this is the operational form its
    Sec. 4 weight is built on (seed notes, methods.md §1), evaluated at the distillation temperature.
    """
    with torch.no_grad():
        ce_student = hard_cross_entropy(student_logits / temperature, labels, reduction="none", dim=dim)
        ce_teacher = hard_cross_entropy(teacher_logits / temperature, labels, reduction="none", dim=dim)
    return ce_student < ce_teacher


def gradient_dominance_samples(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
                               temperature: float = 1.0) -> Tensor:
    """An exploratory reading of Zhou et al.'s regularization samples (issue 26 spec §2, "D2"; from third-party
    summaries, not the paper's text): the samples whose variance-term gradient outweighs the bias-term gradient at
    the true-class logit, |d(L_kd - L_ce)/dz_y| > |dL_ce/dz_y|, with L_ce = CE(s, y) at T = 1 and L_kd =
    T^2 CE(softmax(t/T), softmax(s/T)): dL_ce/dz_y = p_s,y - 1 and dL_kd/dz_y = T (p^T_s,y - p^T_t,y).
    A bool per row of [B, C] logits (classes last); `labels` int64 [B], or a float distribution (its argmax class).
    No gradient."""
    with torch.no_grad():
        y = labels if not labels.is_floating_point() else labels.argmax(-1)
        y = y[:, None]
        p_s = student_logits.softmax(-1).gather(1, y).squeeze(1)
        soft_s = (student_logits / temperature).softmax(-1).gather(1, y).squeeze(1)
        soft_t = (teacher_logits / temperature).softmax(-1).gather(1, y).squeeze(1)
        bias_grad = p_s - 1.0
        variance_grad = temperature * (soft_s - soft_t) - bias_grad
    return variance_grad.abs() > bias_grad.abs()
