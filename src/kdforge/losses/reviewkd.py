"""ReviewKD's hierarchical context loss."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

HCL_LEVELS = (4, 2, 1)


def hcl_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor],
             levels: Sequence[int] = HCL_LEVELS) -> Tensor:
    """Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021, Sec. 3.3 (hierarchical context loss,
    HCL): per stage, the MSE of the fused student feature against the teacher's plus the MSEs of both pooled to
    4x4, 2x2 and 1x1 (spatial pyramid pooling), weighted 1, 1/2, 1/4, 1/8 and divided by the sum of the weights
    used; the stages' losses are summed.

    As the official `hcl_loss` (dvlab-research/ReviewKD, and mdistiller's ReviewKD.py): a level is skipped when it
    is not smaller than the map's height (so a 1x1 map is compared once, unpooled), and each skipped level also
    leaves its weight out. Maps must have equal shapes [B, C, H, W] pairwise.
    Not positional: feature maps [B, C, H, W] compared whole, with pooled pyramids; no class dim, `mask` or
    `reduction` (losses.common's layout rule is for logits).
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(f"hcl_loss: {len(student_features)} student and {len(teacher_features)} teacher features; "
                         "give one teacher feature per student feature, at least one")
    total: Tensor | float = 0.0
    for fs, ft in zip(student_features, teacher_features):
        if fs.shape != ft.shape or fs.ndim != 4:
            raise ValueError(f"hcl_loss: student feature {tuple(fs.shape)} and teacher feature {tuple(ft.shape)} "
                             "must be equal [B, C, H, W] maps")
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for level in levels:
            if level >= fs.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            weights += weight
        total = total + loss / weights
    return total  # type: ignore[return-value]
