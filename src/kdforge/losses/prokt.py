"""ProKT: the student follows local intermediate targets, the teacher's supervision projected toward what the
student can currently reach by an approximate mirror-descent step.

Shi, Song, Zhou, Li & Li, "Follow Your Path: a Progressive Method for Knowledge Distillation", ECML-PKDD 2021
(arXiv 2107.09305), Sec. 3. No official code was found. At step t the target q^{t+1} solves

    q^{t+1} = argmin_q  L(q; y) + lambda * KL(q || p_S^t)                         (the projection, KL as the
                                                                                   Bregman divergence)
which the paper approximates with one gradient step of the teacher's parameters on that objective (the teacher
network parameterizes q), and the student then minimises KL(q^{t+1} || p_S). With L linear in q (its first-order
expansion) the exact solution is the mirror-descent step q ∝ p_S * exp(-grad L / lambda) (`mirror_descent_target`).
The student's term is `kd_loss(student, target)`: T^2 * KL(q^{t+1} || p_S) with the target a constant.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import Reduction, class_dim, hard_cross_entropy, kl_div_with_temperature


def prokt_teacher_loss(teacher_logits: Tensor, student_logits: Tensor, labels: Tensor, weight: float,
                       temperature: float = 1.0, *, mask: Tensor | None = None, reduction: Reduction = "mean",
                       dim: int | None = None) -> Tensor:
    """The teacher's objective at one step: CE(teacher, y) + weight * KL(q_T^T || p_S^T), means over positions.

    The student's logits are a constant here (detached): the proximal term pulls the teacher toward the student,
    not the reverse. `weight` is the paper's lambda (1 / mirror-descent step size); weight = 0 is plain CE.
    Layout, `mask` and `reduction` ("mean" | "sum" | "none": per-position CE + weight * KL): losses.common's rule,
    classes on the last dim unless `dim`; `labels` int64 of the positions' shape or a distribution."""
    # kl_div_with_temperature(a, b) = KL(softmax(b/T) || softmax(a/T)): here KL(q_T || p_S), differentiated in q_T.
    kl = kl_div_with_temperature(student_logits.detach(), teacher_logits, temperature, reduction, mask=mask, dim=dim)
    return hard_cross_entropy(teacher_logits, labels, reduction=reduction, mask=mask, dim=dim) + weight * kl


def mirror_descent_target(student_logits: Tensor, grad: Tensor, step: float, *, dim: int | None = None) -> Tensor:
    """Log-probabilities of the exact KL mirror-descent step from the student's distribution, in the logits' layout
    (classes on the last dim unless `dim`):
    argmin_q <grad, q> + KL(q || p_S) / step  =  p_S * exp(-step * grad) / Z  (grad: dL/dq per class)."""
    d = class_dim(student_logits, dim)
    return F.log_softmax(F.log_softmax(student_logits, dim=d) - step * grad, dim=d)
