"""L2T-DLN's dynamic loss network as pure functions of tensors: the 1-vs-1 transformation of the student's outputs
and labels, the loss network applied to it with given weights, the LSTM teacher's gradient preprocessing, and the
logit statistics the method logs.

Hai et al., "L2T-DLN: Learning to Teach with Dynamic Loss Network", NeurIPS 2023 (Sec. 3.1-3.2); official code
1017137588qqcom/L2T-DLN@6ff1876: `DLN_LSTM.py:38-71` (`MetaOptimizer.forward`: the transformation and the
network), `DLN_LSTM.py:115-129` (`LSTMOptimizer.forward`: the preprocessing), `main.py:201` (the mean).

Classification rows only: logits [B, C] with int labels [B]; losses.common's layout rule (`dim`, `mask`,
`reduction`) is not applied here (the learned loss is defined per (sample, class) pair of the 1-vs-1 transformation;
token logits would have to be flattened to rows [N, V] by the caller).
"""
from __future__ import annotations

from collections.abc import Sequence

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Slope of the loss network's LeakyReLU (`nn.LeakyReLU()` in the official code: PyTorch's default).
NEGATIVE_SLOPE = 0.01


def one_vs_one_pairs(logits: Tensor, labels: Tensor) -> Tensor:
    """The 1-vs-1 transformation, [B * C, 4]: for sample b and every class j != y_b the row
    (sigmoid(z_b,y), sigmoid(z_b,j), 1, 0), i.e. (true-class score, other-class score, their labels); the row of
    j = y_b is all zeros. Rows are sample-major (row b * C + j), as the official `view(-1, 4)` lays them out.
    """
    probs = torch.sigmoid(logits)
    other = 1.0 - F.one_hot(labels, logits.shape[1]).to(probs.dtype)  # [B, C], 0 at the true class
    true_prob = probs.gather(1, labels.view(-1, 1)).expand_as(probs)
    ones = torch.ones_like(probs)
    pairs = torch.stack([true_prob, probs, ones, torch.zeros_like(probs)], dim=2)  # [B, C, 4]
    return (pairs * other.unsqueeze(2)).reshape(-1, 4)


def loss_network(pairs: Tensor, weights: Sequence[Tensor], negative_slope: float = NEGATIVE_SLOPE) -> Tensor:
    """The dynamic loss network on 1-vs-1 rows, [N]: bias-free linear layers `weights` ([out, in] each), LeakyReLU
    between them, none after the last ([1, hidden]). Without biases a zero row maps to 0, so the true-class rows
    add nothing to the loss."""
    x = pairs
    for w in weights[:-1]:
        x = F.leaky_relu(x @ w.T, negative_slope)
    return (x @ weights[-1].T).squeeze(1)


def dln_loss(logits: Tensor, labels: Tensor, weights: Sequence[Tensor],
             negative_slope: float = NEGATIVE_SLOPE) -> Tensor:
    """The student's learned loss: the mean of the loss network over all B * C rows of the 1-vs-1 transformation
    (official `torch.mean(DLN(output, y))`, the mean counting the zero rows of the true classes)."""
    return loss_network(one_vs_one_pairs(logits, labels), weights, negative_slope).mean()


def preprocess_gradients(grad: Tensor, factor: float = 10.0) -> Tensor:
    """Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient descent", Appendix A, as the
    L2T-DLN teacher uses it: each coordinate g -> (log|g| / p, sign g) when |g| >= e^-p, else (-1, e^p g); [N, 2].

    Deviation: none; the official code adds 1e-8 inside the log, kept here (it matters only at |g| ~ 1e-8)."""
    g = grad.reshape(-1)
    big = g.abs() >= math.exp(-factor)
    first = torch.where(big, torch.log(g.abs() + 1e-8) / factor, torch.full_like(g, -1.0))
    second = torch.where(big, torch.sign(g), math.exp(factor) * g)
    return torch.stack([first, second], dim=1)


def logit_stats(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Mean true-class and other-class logits and sigmoid scores, and the top-1 accuracy, of the inner batches:
    whether the learned loss pushes the right way (a sign flip shows as other > true)."""
    true_mask = F.one_hot(labels, logits.shape[1]).bool()
    probs = torch.sigmoid(logits)
    return {"logit_true": logits[true_mask].mean(), "logit_other": logits[~true_mask].mean(),
            "sig_true": probs[true_mask].mean(), "sig_other": probs[~true_mask].mean(),
            "inner_top1": logits.argmax(1).eq(labels).float().mean()}
