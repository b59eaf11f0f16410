"""Neuron selectivity transfer (NST)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import pool_to_common_size


def polynomial_kernel(a: Tensor, b: Tensor) -> Tensor:
    """k(a_j, b_i) = (a_j . b_i)^2 (d = 2, c = 0) for all rows of a [B, Ca, N] and b [B, Cb, N]: [B, Cb, Ca],
    the layout of RepDistiller's `NSTLoss.poly_kernel(a, b)`."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2)


def nst_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Huang & Wang 2017, "Like What You Like" (NST, arXiv:1707.01219): L_MMD^2 with k(x, y) = (x^T y + c)^d, d=2, c=0.

    As RepDistiller b84f547 distiller_zoo/NST.py L16-42 (= mdistiller a08d46f distillers/NST.py L12-35): maps
    [B, C, *spatial] pooled to a common size (`pool_to_common_size`), each channel's map flattened and
    L2-normalized, then per sample mean k(t, t) + mean k(s, s) - 2 mean k(s, t) over channel pairs, averaged over
    the batch; the teacher-teacher term is detached, as there. Channel counts may differ. With this kernel it
    equals || mean_j s_j s_j^T - mean_i t_i t_i^T ||_F^2, so it is >= 0 and 0 for identical maps; it is invariant to
    permuting channels and to scaling a channel by c != 0.
    Deviation: the kernel is one batched matmul instead of a broadcast product over [B, Cb, Ca, N] (same values,
    far less memory); non-square maps are pooled per dim (see `pool_to_common_size`).
    Not positional: feature maps [B, C, *spatial], channel statistics per sample; no class dim, `mask` or
    `reduction` (losses.common's layout rule is for logits).
    """
    s, t = pool_to_common_size(student_feature, teacher_feature, "nst_loss")
    s = F.normalize(s.reshape(s.shape[0], s.shape[1], -1), dim=2)
    t = F.normalize(t.reshape(t.shape[0], t.shape[1], -1), dim=2)
    return (polynomial_kernel(t, t).mean().detach() + polynomial_kernel(s, s).mean()
            - 2 * polynomial_kernel(s, t).mean())
