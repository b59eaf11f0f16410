"""Attention transfer (AT)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import pool_to_common_size


def attention_map(feature: Tensor, p: float = 2) -> Tensor:
    """Spatial attention map of features [B, C, *spatial] as RepDistiller's `Attention.at` computes it:
    the channel mean of f^p, flattened and L2-normalized per sample, [B, positions]."""
    return F.normalize(feature.pow(p).mean(1).reshape(feature.shape[0], -1))


def at_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2) -> Tensor:
    """Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017, Eq. 2: || Q_S/|Q_S| - Q_T/|Q_T| ||.

    One layer pair's term, Q the attention maps.
    As RepDistiller b84f547 distiller_zoo/AT.py L18-29 (= mdistiller a08d46f distillers/AT.py L8-17):
    (attention_map(s) - attention_map(t))^2 averaged over batch and positions; the larger map is average-pooled
    to the smaller's size first (`pool_to_common_size`). Channel counts may differ. Methods sum it over layers.
    Invariant to scaling either feature map by c > 0 (the normalization cancels c^p).
    Deviation: the paper's mapping is sum_c |A_c|^p and its distance the p-norm of the difference summed over
    the batch (beta/2 in front); the code, and this, takes the channel mean of A^p (no abs: equal for even p;
    the mean only rescales before the normalization) and the squared difference averaged over batch and positions,
    the form beta = 1000 is tuned for. Non-square maps are pooled per dim, where the official code pools to a
    square of the other's height.
    Not positional: feature maps [B, C, *spatial] compared as whole per-sample attention maps; no class dim,
    `mask` or `reduction` (losses.common's layout rule is for logits).
    """
    s, t = pool_to_common_size(student_feature, teacher_feature, "at_loss")
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
