"""Relational knowledge distillation (RKD): distance-wise and angle-wise potentials of a batch of embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pairwise_distances(embedding: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances [B, B] of the rows of [B, D], as RepDistiller's `RKDLoss.pdist` (squared=False):
    squared distances from the Gram matrix clamped at `eps` before the square root, the diagonal set to 0
    (so distinct rows at distance 0 come out as sqrt(eps))."""
    square = embedding.pow(2).sum(dim=1)
    d = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * embedding @ embedding.t()).clamp(min=eps).sqrt()
    diagonal = torch.eye(len(embedding), dtype=torch.bool, device=embedding.device)
    return d.masked_fill(diagonal, 0.0)


def distance_potential(embedding: Tensor) -> Tensor:
    """psi_D: pairwise distances divided by their mean over the non-zero entries (the off-diagonal pairs)."""
    d = pairwise_distances(embedding)
    return d / d[d > 0].mean()


def angle_potential(embedding: Tensor) -> Tensor:
    """psi_A: cos of the angle at e_i between e_j and e_k for every triplet (i, j, k), flattened [B^3]; a
    degenerate difference (j = i) gives the zero vector, so its cosines are 0."""
    unit = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


def _flat(student_embedding: Tensor, teacher_embedding: Tensor) -> tuple[Tensor, Tensor]:
    b = student_embedding.shape[0]
    if teacher_embedding.shape[0] != b:
        raise ValueError(f"rkd_loss: student batch {b} and teacher batch {teacher_embedding.shape[0]} differ")
    return student_embedding.reshape(b, -1), teacher_embedding.reshape(b, -1).detach()


def rkd_distance_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """L_RKD-D of Park et al. 2019: smooth L1 (Huber, delta 1) between the distance potentials, averaged over the
    B^2 pairs; the teacher side gets no gradient. Invariant to scaling either embedding."""
    s, t = _flat(student_embedding, teacher_embedding)
    with torch.no_grad():
        t_d = distance_potential(t)
    return F.smooth_l1_loss(distance_potential(s), t_d)


def rkd_angle_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """L_RKD-A of Park et al. 2019: smooth L1 (Huber, delta 1) between the angle potentials, averaged over the
    B^3 triplets; the teacher side gets no gradient. Invariant to scaling and translating either embedding."""
    s, t = _flat(student_embedding, teacher_embedding)
    with torch.no_grad():
        t_a = angle_potential(t)
    return F.smooth_l1_loss(angle_potential(s), t_a)


def rkd_loss(student_embedding: Tensor, teacher_embedding: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """Park et al., "Relational Knowledge Distillation", CVPR 2019: w_d * L_RKD-D + w_a * L_RKD-A (Huber losses).

    As RepDistiller b84f547 distiller_zoo/RKD.py L15-58 (`RKDLoss`, w_d=25, w_a=50 at L10; = mdistiller a08d46f
    distillers/RKD.py L8-50): distance_weight * rkd_distance_loss + angle_weight * rkd_angle_loss on embeddings
    [B, D] (other ranks flattened per sample; sizes may differ). The teacher's potentials are computed without
    gradient, as there.
    Deviation: the diagonal of the distance matrix is zeroed with masked_fill instead of an in-place write on a
    clone (same values and gradients).
    Not positional: relations between the samples of the batch (distances, angles); no class dim, `mask` or
    `reduction` (losses.common's layout rule is for logits).
    For token states [B, L, D] either a sequence is a sample (flattened) or pass kept tokens as rows [N, D].
    """
    return (distance_weight * rkd_distance_loss(student_embedding, teacher_embedding)
            + angle_weight * rkd_angle_loss(student_embedding, teacher_embedding))
