"""Classic knowledge distillation on softened logits."""
from __future__ import annotations

from functools import partial

from torch import Tensor

from kdforge.losses.common import Reduction, kl_rows, positional


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0, *,
            mask: Tensor | None = None, reduction: Reduction = "mean", dim: int | None = None) -> Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", Sec. 2: T^2 * KL(p_t^T || p_s^T).

    Mean over positions of KL(softmax(t/T) || softmax(s/T)) times T^2, the factor that keeps the soft-label
    gradient, T * (softmax(s/T) - softmax(t/T)) / N, on the scale of the hard-label one as T changes.
    Layout: classes on the last dim ([B, C]; [B, L, V] gives per-token KD averaged over the B * L tokens), `dim=`
    for another; `mask` (bool over the positions) keeps positions; `reduction` "mean" | "sum" | "none"
    (per-position T^2 * KL). See losses.common for the rule. `forward_kl_loss(s, t, T) * T^2` is the same number.
    """
    kl = positional(partial(kl_rows, temperature=temperature), student_logits, teacher_logits, reduction, mask, dim,
                    "kd_loss")
    return temperature**2 * kl
