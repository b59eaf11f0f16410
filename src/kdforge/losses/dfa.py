"""DFA's feature aggregation: one target feature map per teacher stage, a convex combination of several of the
teacher's maps in that stage (Guan et al., "Differentiable Feature Aggregation Search for Knowledge
Distillation", ECCV 2020).

Only the paper's abstract could be read here (no text, no official code): it says the aggregation of multiple
teacher feature maps imitates multi-teacher distillation with one teacher and is searched DARTS-style, with
architecture parameters over the candidates. This module is that DARTS mixing, o(x) = sum_i softmax(alpha)_i o_i(x)
(Liu et al., "DARTS", ICLR 2019, Eq. 2) over feature maps instead of operations; the weights are an argument so
the same function serves the search (softmax of the architecture parameters, with gradients) and the derived
aggregation (fixed weights). Pooling earlier, larger maps down to the stage output's size is our choice.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def aggregate_features(candidates: Sequence[Tensor], weights: Tensor) -> Tensor:
    """sum_i weights[i] * candidates[i], each candidate [B, C, *S_i] first adaptive-average-pooled to the last
    candidate's spatial size S (every S_i >= S elementwise); vectors [B, C] are combined as they are.

    `weights` [n] is typically softmax(alpha) (the search) or a fixed derived vector; a ValueError for a weight
    count that does not match, or candidates whose batch / channels differ from the last one's or that are
    smaller than it.
    Not positional: a combination of whole feature maps; no class dim, `mask` or `reduction` (losses.common's
    layout rule is for logits).
    """
    if weights.dim() != 1 or weights.numel() != len(candidates) or not candidates:
        raise ValueError(f"aggregate_features: {len(candidates)} candidate(s) but weights of shape "
                         f"{tuple(weights.shape)}")
    target = candidates[-1]
    out = weights[-1] * target
    for w, c in zip(weights[:-1], candidates[:-1]):
        out = out + w * _pooled_to(c, target)
    return out


def _pooled_to(c: Tensor, target: Tensor) -> Tensor:
    if c.shape[:2] != target.shape[:2] or c.dim() != target.dim() or c.dim() not in (2, 3, 4):
        raise ValueError(f"aggregate_features: candidate {tuple(c.shape)} cannot be combined with the stage output "
                         f"{tuple(target.shape)}: batch and channels must match")
    if c.shape[2:] == target.shape[2:]:
        return c
    if any(a < b for a, b in zip(c.shape[2:], target.shape[2:])):
        raise ValueError(f"aggregate_features: candidate {tuple(c.shape)} is smaller than the stage output "
                         f"{tuple(target.shape)}; take candidates from the stage or earlier")
    pool = F.adaptive_avg_pool1d if c.dim() == 3 else F.adaptive_avg_pool2d
    return pool(c, tuple(target.shape[2:]))
