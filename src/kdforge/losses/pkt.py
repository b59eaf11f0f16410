"""Probabilistic knowledge transfer (PKT)."""
from __future__ import annotations

import torch
from torch import Tensor


def cosine_probabilities(embedding: Tensor, eps: float = 1e-7) -> Tensor:
    """Conditional probabilities from the cosine kernel, as RepDistiller's `PKT.cosine_similarity_loss` forms
    them: rows divided by (their norm + eps) (NaN entries set to 0), cosines rescaled to [0, 1] as (cos + 1) / 2,
    each row divided by its sum. [B, D] (or [B, ...], flattened) -> [B, B]."""
    x = embedding.reshape(embedding.shape[0], -1)
    x = x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)
    x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
    similarity = (x @ x.t() + 1.0) / 2.0
    return similarity / torch.sum(similarity, dim=1, keepdim=True)


def pkt_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-7) -> Tensor:
    """Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018: KL(q || p).

    q and p are the teacher's and student's cosine-kernel conditional probabilities.
    As RepDistiller b84f547 distiller_zoo/PKT.py L16-42 (= mdistiller a08d46f distillers/PKT.py L8-35), eps
    placements included: mean over the b x b entries of q * log((q + eps) / (p + eps)), q the teacher's and p the
    student's `cosine_probabilities`. Embedding sizes may differ; invariant to scaling any sample's
    embedding by c > 0 (up to eps).
    Deviation: the paper sums the KL over pairs, the code averages over the b^2 entries (the weight, 30000,
    absorbs it); inputs of rank > 2 are flattened per sample (the official code takes [B, D] only); NaN entries
    are zeroed with torch.where instead of in-place indexing (same values and gradients).
    Not positional: relations between the samples of the batch (a [B, B] kernel); no class dim, `mask` or
    `reduction` (losses.common's layout rule is for logits).
    For token states [B, L, D] either a sequence is a sample (flattened) or pass kept tokens as rows [N, D].
    """
    if teacher_embedding.shape[0] != student_embedding.shape[0]:
        raise ValueError(f"pkt_loss: student batch {student_embedding.shape[0]} and teacher batch "
                         f"{teacher_embedding.shape[0]} differ")
    p = cosine_probabilities(student_embedding, eps)
    q = cosine_probabilities(teacher_embedding, eps)
    return torch.mean(q * torch.log((q + eps) / (p + eps)))
