"""Contrastive Representation Distillation (CRD): the NCE loss over memory-bank scores.

Follows RepDistiller, HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403 `crd/criterion.py`
L51-76 (`ContrastLoss`) and `crd/memory.py` L39-61 (the scores); the memory bank and its update are state, so
they live in the `crd` method (`kdforge.methods.crd.ContrastMemory`).
"""
from __future__ import annotations

import torch
from torch import Tensor

# Official criterion.py L5: keeps the NCE ratios finite.
_NCE_EPS = 1e-7


def crd_scores(anchor: Tensor, candidates: Tensor, temperature: float = 0.07) -> Tensor:
    """exp(<c_k, a> / T) for each anchor a [B, D] and its K + 1 candidates c [B, K + 1, D]: shape [B, K + 1]
    (official memory.py L39-47; the division by the normalization constant Z is the caller's)."""
    return torch.exp(torch.bmm(candidates, anchor.unsqueeze(2)).squeeze(2) / temperature)


def crd_nce_loss(scores: Tensor, n_data: int) -> Tensor:
    """Tian et al., "Contrastive Representation Distillation", ICLR 2020, Eq. 18: the NCE loss of one side.

    `scores` [B, 1 + K] are P(i | v) = exp(<m_i, v> / T) / Z, the positive first, then K negatives drawn from the
    noise distribution P_n = 1 / n_data (n_data: training-set size). With m = K:
        -1/B * sum_b [ log(P_pos / (P_pos + m P_n + eps)) + sum_k log(m P_n / (P_neg,k + m P_n + eps)) ]
    as official criterion.py L59-76. A scalar (the official returns a tensor of shape [1]).
    Not positional: one row of memory-bank scores per sample; no class dim, `mask` or `reduction` (losses.common's
    layout rule is for logits).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"crd_nce_loss: scores must be [batch, 1 + negatives], got {tuple(scores.shape)}")
    m = scores.shape[1] - 1
    noise = m / float(n_data)
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + _NCE_EPS))
    log_d0 = torch.log(noise / (neg + noise + _NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]
