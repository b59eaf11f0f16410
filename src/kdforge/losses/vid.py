"""Variational Information Distillation (VID): Gaussian negative log-likelihood of the teacher's feature.

Follows RepDistiller's `VIDLoss`, HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403
`distiller_zoo/VID.py` L9-54 (itself from the authors' code, ssahn0215/variational-information-distillation);
the regressor that predicts the mean and the variance parameter live in the `vid` method.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

# Official L17/L48: added to the softplus so the variance never reaches 0.
VID_EPS = 1e-5


def vid_variance(log_scale: Tensor, eps: float = VID_EPS) -> Tensor:
    """The per-channel variance softplus(log_scale) + eps (official L48: log(1 + exp(alpha_c)) + eps)."""
    return F.softplus(log_scale) + eps


def vid_log_scale_init(init_pred_var: float = 5.0, eps: float = VID_EPS) -> float:
    """The log_scale whose `vid_variance` is `init_pred_var` (official L33-35: log(exp(v - eps) - 1))."""
    return math.log(math.expm1(init_pred_var - eps))


def vid_nll(pred_mean: Tensor, pred_var: Tensor, target: Tensor) -> Tensor:
    """Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019, Sec. 3: -log q(t|s).

    Mean over every element of 0.5 * ((mu - t)^2 / var_c + log var_c): the Gaussian q(t | s) with the mean
    `pred_mean` [B, C, ...] regressed from the student and a variance `pred_var` [C] per channel (official L48-53),
    without the constant 0.5 log(2 pi). `target` is the teacher's feature, of `pred_mean`'s shape.
    Not positional: a Gaussian likelihood of every element of a feature tensor with a per-channel variance; no
    class dim, `mask` or `reduction` (losses.common's layout rule is for logits).
    """
    if pred_mean.shape != target.shape:
        raise ValueError(f"vid_nll: predicted mean {tuple(pred_mean.shape)} and teacher feature "
                         f"{tuple(target.shape)} differ")
    if pred_var.dim() != 1 or pred_var.shape[0] != target.shape[1]:
        raise ValueError(f"vid_nll: the variance has shape {tuple(pred_var.shape)}; it needs one value per channel "
                         f"({target.shape[1]})")
    var = pred_var.view(1, -1, *([1] * (target.dim() - 2))).to(pred_mean)
    return (0.5 * ((pred_mean - target) ** 2 / var + var.log())).mean()
