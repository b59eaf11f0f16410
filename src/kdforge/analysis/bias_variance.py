"""Bias-variance decompositions of an ensemble's predictions, per test sample (pure functions of tensors).

Yang et al., "Rethinking Bias-Variance Trade-off for Generalization of Neural Networks", ICML 2020: models
trained on disjoint (or bootstrap) parts of the training set; the expected loss over those training sets is split
into bias and variance at every test point. Official code: yaodongyu/Rethink-BiasVariance-Tradeoff,
`cifar10/evaluate_bv_ce.py` (cross-entropy) and `cifar10/train_ce.py` (MSE of the softmax outputs).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Decomposition:
    """Per-sample [N] bias, variance and risk (the ensemble-mean loss); risk = bias + variance."""

    bias: Tensor
    variance: Tensor
    risk: Tensor

    def means(self) -> dict[str, float]:
        return {"bias": float(self.bias.mean()), "variance": float(self.variance.mean()),
                "risk": float(self.risk.mean())}


def _check(log_probs: Tensor, labels: Tensor) -> None:
    if log_probs.dim() != 3 or labels.shape != log_probs.shape[1:2]:
        raise ValueError(f"need log-probabilities [models, samples, classes] and labels [samples]; got "
                         f"{tuple(log_probs.shape)} and {tuple(labels.shape)}")


def ce_decomposition(log_probs: Tensor, labels: Tensor) -> Decomposition:
    """Heskes (1998) / Yang et al. (2020) Sec. 3, Eq. (5)-(6) for cross-entropy, per sample.

    With pi_bar(x) = normalize(exp(mean_j log p_j(x))) (the normalized geometric mean of the members):
      bias     = -log pi_bar_y(x)                      (Yang et al. call it Bias^2; the code's NLL of pi_bar)
      variance = mean_j KL(pi_bar(x) || p_j(x))        (= -log Z(x), Z the normalizer: >= 0 by AM-GM)
      risk     = mean_j -log p_j,y(x)                  = bias + variance exactly.
    `log_probs` is [M, N, C] (log-softmax of M members), `labels` int64 [N].
    """
    _check(log_probs, labels)
    mean_log = log_probs.mean(0)                                  # [N, C]: log of the geometric mean
    log_pi_bar = torch.log_softmax(mean_log, dim=1)
    bias = -log_pi_bar.gather(1, labels[:, None]).squeeze(1)
    variance = (log_pi_bar.exp()[None] * (log_pi_bar[None] - log_probs)).sum(2).mean(0)
    risk = -log_probs.gather(2, labels[None, :, None].expand(len(log_probs), -1, 1)).squeeze(2).mean(0)
    return Decomposition(bias=bias, variance=variance, risk=risk)


def mse_decomposition(probs: Tensor, labels: Tensor, unbiased: bool = True) -> Decomposition:
    """Yang et al. (2020) Eq. (2) for the squared error of the softmax outputs against one-hot labels, per sample.

      variance = mean_j ||p_j - p_bar||^2  (times M / (M - 1) when `unbiased`, as `train_ce.py` does)
      risk     = mean_j ||p_j - y||^2,  bias = risk - variance  (= ||p_bar - y||^2 when not unbiased).
    `probs` is [M, N, C] softmax outputs.
    """
    _check(probs, labels)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[2]).to(probs.dtype)
    risk = ((probs - onehot[None]) ** 2).sum(2).mean(0)
    variance = ((probs - probs.mean(0, keepdim=True)) ** 2).sum(2).mean(0)
    if unbiased and len(probs) > 1:
        variance = variance * len(probs) / (len(probs) - 1)
    return Decomposition(bias=risk - variance, variance=variance, risk=risk)


def jackknife_se(values: Sequence[float]) -> float:
    """Leave-one-out jackknife standard error from the M leave-one-out estimates theta_(i):
    sqrt((M - 1) / M * sum_i (theta_(i) - mean theta_(.))^2); nan below two values.

    Why the jackknife and not a bootstrap over the members: resampling 5 parts with replacement duplicates members,
    which pulls the geometric-mean ensemble toward them and biases the Heskes variance down (issue 26 spec §1)."""
    values = [float(v) for v in values]
    m = len(values)
    if m < 2:
        return math.nan
    mean = sum(values) / m
    return math.sqrt((m - 1) / m * sum((v - mean) ** 2 for v in values))


def leave_one_out(log_probs: Tensor, labels: Tensor) -> dict[str, list[float]]:
    """The test-mean CE bias, variance, risk and the MSE bias and variance of the ensemble without member i, for every
    member i of `log_probs` [M, N, C]: the theta_(i) of `jackknife_se`. Member order is kept, so two ensembles whose
    member i trained on the same part (every width of a sweep: the parts are fixed by the part seed) pair by index."""
    _check(log_probs, labels)
    if len(log_probs) < 3:
        raise ValueError(f"leave-one-out needs at least 3 members (2 remain for a variance), got {len(log_probs)}")
    out: dict[str, list[float]] = {k: [] for k in ("bias", "variance", "risk", "mse_bias", "mse_variance")}
    for i in range(len(log_probs)):
        rest = torch.cat([log_probs[:i], log_probs[i + 1:]])
        ce, mse = ce_decomposition(rest, labels).means(), mse_decomposition(rest.exp(), labels)
        for key in ("bias", "variance", "risk"):
            out[key].append(ce[key])
        out["mse_bias"].append(float(mse.bias.mean()))
        out["mse_variance"].append(float(mse.variance.mean()))
    return out


def paired_jackknife_se(a: Sequence[float], b: Sequence[float]) -> float:
    """SE of (theta_b - theta_a) for two ensembles whose members pair by index (same part at two widths): the
    jackknife over the member-wise differences b_(i) - a_(i) of their leave-one-out estimates."""
    if len(a) != len(b):
        raise ValueError(f"paired jackknife needs the same members in both ensembles; got {len(a)} and {len(b)}")
    return jackknife_se([y - x for x, y in zip(a, b)])
