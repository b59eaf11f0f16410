"""The operations a KD-Zero distiller is composed of: knowledge transforms and distances, as pure functions.

Li, Zhang, Ouyang, Liu & Li, "KD-Zero: Evolving Knowledge Distiller for Any Teacher-Student Pairs", NeurIPS 2023,
Sec. 3.1: a distiller is L = w * D(T(K_s), T(K_t)), a chain of transforms T applied to the student's and the
teacher's knowledge K (logits or feature maps), a distance D, and a weight w. The transforms and distances below
are the families the paper names (temperature softmax, normalisations, masks, attention, Gram and relation maps;
KL, L1, L2, smooth-L1, cosine, Pearson). Deviation: the paper's operation lists are not public (no official code
was found), so each operation is written here from the method it comes from (cited per function).

A transform maps a batch [B, ...] to a tensor whose first dim is B (or, for a relation across the batch, one
matrix); a distance maps two tensors of one shape to a scalar. Shapes that do not fit raise ValueError: a search
meets those as invalid programs and rejects them before any training.

Not positional: these are search-space operations on a batch [B, ...] (softmax_t takes dim 1, the classes of [B, C]
logits and the channels of feature maps), not losses.common's layout rule; token logits are outside this space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8  # floor of probabilities in KL and of norms / standard deviations in the normalisations


def _needs_maps(x: Tensor, op: str) -> None:
    if x.dim() < 3:
        raise ValueError(f"{op}: needs feature maps [B, C, ...], got shape {tuple(x.shape)}")


def _same_shape(s: Tensor, t: Tensor, op: str) -> None:
    if s.shape != t.shape:
        raise ValueError(f"{op}: student and teacher knowledge differ in shape: {tuple(s.shape)} vs {tuple(t.shape)}")


# ---- transforms ---------------------------------------------------------------------------------------------
def softmax_t(x: Tensor, temperature: float) -> Tensor:
    """softmax(x / T) over dim 1 (classes of logits, channels of feature maps); Hinton et al. 2015, Eq. 1."""
    return F.softmax(x / temperature, dim=1)


def sigmoid_t(x: Tensor, temperature: float) -> Tensor:
    """sigmoid(x / T) elementwise: the per-class binary view of logits (BKD in Hao et al., NeurIPS 2023)."""
    return torch.sigmoid(x / temperature)


def l2_normalize(x: Tensor) -> Tensor:
    """Each sample's flattened knowledge divided by its L2 norm (the normalisation of AT and SP)."""
    flat = x.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(EPS)).view_as(x)


def batch_standardize(x: Tensor) -> Tensor:
    """(x - mean over the batch) / std over the batch, per position: a BatchNorm without affine parameters."""
    return (x - x.mean(0, keepdim=True)) / x.std(0, unbiased=False, keepdim=True).clamp_min(EPS)


def sample_standardize(x: Tensor) -> Tensor:
    """(x - mean) / std over each sample's own values: a LayerNorm without affine parameters (the logit
    standardisation of Sun et al., CVPR 2024, "Logit Standardization in KD", Eq. 8, for logits)."""
    flat = x.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, unbiased=False, keepdim=True).clamp_min(EPS)
    return z.view_as(x)


def mask_target(x: Tensor, labels: Tensor) -> Tensor:
    """The logits without the target class, [B, C-1]: DKD's non-target view (Zhao et al., CVPR 2022, Eq. 2);
    a softmax after it gives DKD's p-hat. Mixed (soft) labels mask their largest class."""
    if x.dim() != 2:
        raise ValueError(f"mask_target: needs logits [B, C], got shape {tuple(x.shape)}")
    target = labels.argmax(1) if labels.dim() == 2 else labels
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, target.view(-1, 1), False)
    return x[keep].view(x.shape[0], x.shape[1] - 1)


def attention_map(x: Tensor) -> Tensor:
    """Spatial attention: mean over channels of x^2, flattened, [B, H*W] (Zagoruyko & Komodakis 2017, Eq. 2, p=2;
    without the L2 normalisation, which is its own transform here)."""
    _needs_maps(x, "attention")
    return x.pow(2).mean(1).flatten(1)


def gram_matrix(x: Tensor) -> Tensor:
    """Channel Gram matrix F F^T / (H*W) per sample, [B, C, C] (the FSP / style-transfer Gram; Yim et al. 2017)."""
    _needs_maps(x, "gram")
    f = x.flatten(2)
    return f @ f.transpose(1, 2) / f.shape[2]


def batch_relation(x: Tensor) -> Tensor:
    """Sample-to-sample similarity G G^T with rows L2-normalised, [B, B] (Tung & Mori 2019, SP, Eq. 1-2)."""
    f = x.flatten(1)
    return F.normalize(f @ f.t(), p=2, dim=1)


def channel_relation(x: Tensor) -> Tensor:
    """Class-to-class (or channel-to-channel, after spatial averaging) correlation over the batch, [C, C]: each
    column standardised over the batch, then Z^T Z / B (the inter-class relation of DIST, Huang et al. 2022)."""
    v = x.flatten(2).mean(2) if x.dim() > 2 else x
    z = batch_standardize(v)
    return z.t() @ z / z.shape[0]


def global_pool(x: Tensor) -> Tensor:
    """Global average pooling of feature maps, [B, C]."""
    _needs_maps(x, "pool")
    return x.flatten(2).mean(2)


# ---- distances ----------------------------------------------------------------------------------------------
def kl_distance(s: Tensor, t: Tensor) -> Tensor:
    """KL(t || s) per row of the flattened inputs, mean over rows (dim 0). Rows are read as distributions: values
    floored at EPS and renormalised, so softmax outputs are taken as they are; with softmax(./T) on both sides
    this is Hinton's KD term without T^2 (the weight carries it)."""
    _same_shape(s, t, "kl")
    p_s = s.flatten(1).clamp_min(EPS)
    p_t = t.flatten(1).clamp_min(EPS)
    p_s, p_t = p_s / p_s.sum(1, keepdim=True), p_t / p_t.sum(1, keepdim=True)
    return (p_t * (p_t.log() - p_s.log())).sum(1).mean()


def l1_distance(s: Tensor, t: Tensor) -> Tensor:
    """Mean absolute difference."""
    _same_shape(s, t, "l1")
    return (s - t).abs().mean()


def l2_distance(s: Tensor, t: Tensor) -> Tensor:
    """Mean squared difference (FitNets' hint loss, Romero et al. 2015, Eq. 3, averaged)."""
    _same_shape(s, t, "l2")
    return (s - t).pow(2).mean()


def smooth_l1_distance(s: Tensor, t: Tensor) -> Tensor:
    """Huber loss with beta 1, averaged (as RKD uses it, Park et al. 2019, Eq. 5)."""
    _same_shape(s, t, "smooth_l1")
    return F.smooth_l1_loss(s, t)


def cosine_distance(s: Tensor, t: Tensor) -> Tensor:
    """1 - cosine similarity of each row of the flattened inputs, averaged."""
    _same_shape(s, t, "cosine")
    return (1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=EPS)).mean()


def pearson_distance(s: Tensor, t: Tensor) -> Tensor:
    """1 - Pearson correlation of each row of the flattened inputs, averaged (DIST, Huang et al., NeurIPS 2022,
    Eq. 3-4): the cosine of the row-centred vectors."""
    _same_shape(s, t, "pearson")
    s, t = s.flatten(1), t.flatten(1)
    return cosine_distance(s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True))
