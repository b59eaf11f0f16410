"""crd_nce_loss (Tian et al. 2020, Eq. 18) as RepDistiller's ContrastLoss computes it, on fixed scores."""
from __future__ import annotations

import math

import pytest
import torch

from kdforge.losses import crd_nce_loss, crd_scores

eps = 1e-7


class _RefContrastLoss(torch.nn.Module):
    """HobbitLong/RepDistiller@b84f547 crd/criterion.py L51-76, verbatim."""
    def __init__(self, n_data):
        super(_RefContrastLoss, self).__init__()
        self.n_data = n_data

    def forward(self, x):
        bsz = x.shape[0]
        m = x.size(1) - 1

        # noise distribution
        Pn = 1 / float(self.n_data)

        # loss for positive pair
        P_pos = x.select(1, 0)
        log_D1 = torch.div(P_pos, P_pos.add(m * Pn + eps)).log_()

        # loss for K negative pair
        P_neg = x.narrow(1, 1, m)
        log_D0 = torch.div(P_neg.clone().fill_(m * Pn), P_neg.add(m * Pn + eps)).log_()

        loss = - (log_D1.sum(0) + log_D0.view(-1, 1).sum(0)) / bsz

        return loss


@pytest.mark.parametrize("n_data,k", [(50000, 16384), (1000, 64), (100, 5)])
def test_matches_repdistiller_on_fixed_scores(n_data, k):
    g = torch.Generator().manual_seed(k)
    scores = torch.rand(6, k + 1, generator=g, dtype=torch.float64) * 3 / n_data  # P = exp(.)/Z is ~ 1/n_data
    ref = _RefContrastLoss(n_data)(scores.unsqueeze(2))  # the memory returns [B, K + 1, 1]
    assert ref.shape == (1,)
    assert torch.allclose(crd_nce_loss(scores, n_data), ref.squeeze(0), rtol=1e-12)
    a, b = scores.clone().requires_grad_(), scores.clone().unsqueeze(2).requires_grad_()
    crd_nce_loss(a, n_data).backward()
    _RefContrastLoss(n_data)(b).sum().backward()
    assert torch.allclose(a.grad, b.grad.squeeze(2), rtol=1e-10)


def test_hand_value():
    # n_data = 4, one negative: m P_n = 1/4. Positive 3/4 -> log(3/4 / 1); negative 1/4 -> log(1/4 / (1/2)).
    scores = torch.tensor([[0.75, 0.25]], dtype=torch.float64)
    expected = -(math.log(0.75 / (1.0 + eps)) + math.log(0.25 / (0.5 + eps)))
    assert crd_nce_loss(scores, 4).item() == pytest.approx(expected, rel=1e-12)
    # a better positive and a smaller negative score lower the loss
    assert crd_nce_loss(torch.tensor([[0.9, 0.1]], dtype=torch.float64), 4) < crd_nce_loss(scores, 4)


def test_gradcheck_and_shapes():
    s = (torch.rand(3, 5, dtype=torch.float64) * 0.01).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: crd_nce_loss(x, 200), (s,))
    with pytest.raises(ValueError, match=r"\[batch, 1 \+ negatives\]"):
        crd_nce_loss(torch.rand(3), 10)


def test_scores_are_exp_of_inner_products_over_temperature():
    g = torch.Generator().manual_seed(0)
    anchor = torch.randn(2, 4, generator=g, dtype=torch.float64)
    cands = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    expected = torch.stack([torch.exp(cands[b] @ anchor[b] / 0.07) for b in range(2)])
    assert torch.allclose(crd_scores(anchor, cands, 0.07), expected, rtol=1e-12)
    # RepDistiller memory.py L41-42: bmm of the [B, K+1, D] rows with the [B, D, 1] anchor
    assert torch.allclose(crd_scores(anchor, cands, 0.5),
                          torch.exp(torch.div(torch.bmm(cands, anchor.view(2, 4, 1)), 0.5)).squeeze(2))
