"""Distillation with unlabeled examples: the teacher's pseudo-labels as targets, and the baselines the SLaM paper
(Kontonis et al., NeurIPS 2023, Sec. 5) compares against: hard pseudo-labels, confidence-thresholded pseudo-labels
and forward loss-correction with a noise transition matrix. Every loss follows losses.common's rule: classes on the
last dim ([B, C], or [B, L, V] token logits) unless `dim=`, the mean over positions by default, `mask=` and
`reduction=` ("mean" | "sum" | "none").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import Positions, Reduction, class_dim, hard_cross_entropy


def hard_pseudo_label_loss(student_logits: Tensor, teacher_logits: Tensor, *, mask: Tensor | None = None,
                           reduction: Reduction = "mean", dim: int | None = None) -> Tensor:
    """CE of the student on the teacher's top-1 class (Lee 2013, "Pseudo-Label", Eq. 1 with the teacher as the
    labeller): the hard-label baseline of distillation with unlabeled examples. Per position on [B, L, V]."""
    labels = teacher_logits.argmax(dim=class_dim(teacher_logits, dim))
    return hard_cross_entropy(student_logits, labels, reduction=reduction, mask=mask, dim=dim)


def confidence_mask(teacher_logits: Tensor, threshold: float, *, dim: int | None = None) -> Tensor:
    """1.0 where the teacher's top-1 probability is at least `threshold`, else 0.0; per position ([B] for [B, C])."""
    d = class_dim(teacher_logits, dim)
    return (F.softmax(teacher_logits.float(), dim=d).amax(dim=d) >= threshold).to(teacher_logits.dtype)


def thresholded_pseudo_label_loss(student_logits: Tensor, teacher_logits: Tensor, threshold: float, *,
                                  mask: Tensor | None = None, reduction: Reduction = "mean",
                                  dim: int | None = None) -> Tensor:
    """Hard pseudo-labels kept only where the teacher is confident: mean over the positions of
    1[max_c p_t,c >= threshold] * CE(argmax p_t, p_s) (Sohn et al. 2020, FixMatch, Eq. 4, with the teacher's
    prediction in place of the weak-view prediction). Positions below the threshold count as zero in the mean, as in
    FixMatch, so the loss scale falls with the share kept instead of jumping when few pass; positions `mask` drops
    (padding) are not counted at all."""
    pos = Positions(student_logits, dim, mask, "thresholded_pseudo_label_loss")
    s, t = pos.rows(student_logits), pos.rows(teacher_logits)
    per_row = hard_cross_entropy(s, t.argmax(dim=1), reduction="none")
    return pos.reduce(confidence_mask(t, threshold) * per_row, reduction)


def transition_matrix(true_labels: Tensor, noisy_labels: Tensor, num_classes: int, smoothing: float = 1.0) -> Tensor:
    """T[i, j] = P(noisy label j | true label i), estimated from labeled pairs as row-normalised counts, each cell
    plus `smoothing` (Laplace; a class absent from the pairs gets a uniform row instead of a division by zero).

    Patrini et al. 2017 estimate T from the network's own outputs (anchor points); here the pairs are the
    teacher's top-1 labels on labeled validation data, which the SLaM setting provides."""
    counts = torch.full((num_classes, num_classes), float(smoothing), dtype=torch.float64)
    counts.index_put_((true_labels.long().cpu(), noisy_labels.long().cpu()),
                      torch.ones(len(true_labels), dtype=torch.float64), accumulate=True)
    return (counts / counts.sum(dim=1, keepdim=True)).float()


def forward_corrected_loss(student_logits: Tensor, noisy_labels: Tensor, transition: Tensor, eps: float = 1e-12, *,
                           mask: Tensor | None = None, reduction: Reduction = "mean", dim: int | None = None) -> Tensor:
    """Forward loss correction (Patrini et al., CVPR 2017, "Making Deep Neural Networks Robust to Label Noise: a
    Loss Correction Approach", Theorem 2): -log (T^T p_s)_{y~}, the CE of the noisy label against the student's
    clean-class probabilities pushed through the transition matrix T [C, C] (rows: true class). T = I gives
    plain CE. `noisy_labels` are int64 classes (the positions' shape) or a distribution of the logits' shape (then
    -sum_j y~_j log (T^T p_s)_j)."""
    pos = Positions(student_logits, dim, mask, "forward_corrected_loss")
    noisy_probs = F.softmax(pos.rows(student_logits), dim=1) @ transition.to(student_logits)
    log_noisy = noisy_probs.clamp_min(eps).log()
    targets = pos.targets(noisy_labels)
    if targets.dim() == 1:
        return pos.reduce_native(lambda r: F.nll_loss(log_noisy, targets, reduction=r), reduction)
    return pos.reduce(-(targets * log_noisy).sum(dim=1), reduction)
