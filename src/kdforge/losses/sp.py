"""Similarity-preserving knowledge distillation (SP)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def similarity_matrix(feature: Tensor) -> Tensor:
    """G = Q Q^T of the flattened features Q [B, D], each row L2-normalized: [B, B]."""
    q = feature.reshape(feature.shape[0], -1)
    return F.normalize(q @ q.t())


def sp_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019, L_SP: 1/b^2 ||G_T - G_S||_F^2.

    G = Q Q^T with its rows L2-normalized (`similarity_matrix`).
    As RepDistiller b84f547 distiller_zoo/SP.py L16-30 (= mdistiller a08d46f distillers/SP.py L12-24). The two
    features may have any shapes with the same batch size b: only the b x b similarities are compared, so the
    loss is invariant to permuting (or rotating) the feature dimensions and to scaling a whole
    feature tensor by c != 0 (G scales by c^2, which the row normalization removes).
    Deviation: returns a 0-dim tensor where the official returns shape (1,).
    Not positional: relations between the samples of the batch (a [B, B] similarity); no class dim, `mask` or
    `reduction` (losses.common's layout rule is for logits).
    """
    b = student_feature.shape[0]
    if teacher_feature.shape[0] != b:
        raise ValueError(f"sp_loss: student batch {b} and teacher batch {teacher_feature.shape[0]} differ")
    diff = similarity_matrix(teacher_feature) - similarity_matrix(student_feature)
    return diff.pow(2).sum() / (b * b)
