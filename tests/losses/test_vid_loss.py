"""vid_nll (Ahn et al. 2019) as RepDistiller's VIDLoss computes it: hand value, reference equality, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdforge.losses import vid_log_scale_init, vid_nll, vid_variance


def _ref_vid(pred_mean, log_scale, target, eps=1e-5):
    """HobbitLong/RepDistiller@b84f547 distiller_zoo/VID.py L47-54, after the regressor (L47) has run."""
    pred_var = torch.log(1.0+torch.exp(log_scale))+eps
    pred_var = pred_var.view(1, -1, 1, 1)
    neg_log_prob = 0.5*(
        (pred_mean-target)**2/pred_var+torch.log(pred_var)
        )
    loss = torch.mean(neg_log_prob)
    return loss


def test_hand_value_gaussian_nll():
    # one channel, variance 4: elements (mu - t) = 2 and 0 -> 0.5 * (4/4 + log 4) and 0.5 * (0 + log 4)
    mean = torch.tensor([[[[2.0, 1.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    var = torch.tensor([4.0], dtype=torch.float64)
    expected = 0.5 * (0.5 * (1 + math.log(4)) + 0.5 * math.log(4))
    assert vid_nll(mean, var, target).item() == pytest.approx(expected, rel=1e-12)
    # equals -log N(t; mu, var) averaged, less the constant 0.5 log(2 pi)
    normal = torch.distributions.Normal(mean, var.sqrt().view(1, -1, 1, 1))
    assert vid_nll(mean, var, target).item() == pytest.approx(
        (-normal.log_prob(target)).mean().item() - 0.5 * math.log(2 * math.pi), rel=1e-12)


def test_matches_repdistiller_and_init_variance():
    g = torch.Generator().manual_seed(0)
    mean, target = torch.randn(2, 2, 3, 5, 5, generator=g, dtype=torch.float64)
    # RepDistiller's init: log_scale = log(exp(init_pred_var - eps) - 1) (L33-35)
    log_scale = torch.full((3,), float(np.log(np.exp(5.0 - 1e-5) - 1.0)), dtype=torch.float64)
    assert vid_log_scale_init(5.0) == pytest.approx(log_scale[0].item(), rel=1e-12)
    assert torch.allclose(vid_variance(log_scale), torch.full((3,), 5.0, dtype=torch.float64))
    log_scale = log_scale + torch.randn(3, generator=g, dtype=torch.float64)
    a = log_scale.clone().requires_grad_()
    b = log_scale.clone().requires_grad_()
    ours, ref = vid_nll(mean, vid_variance(a), target), _ref_vid(mean, b, target)
    assert torch.allclose(ours, ref, rtol=1e-12)
    ours.backward()
    ref.backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-10)


def test_gradients_closed_form_and_gradcheck():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)  # [B, C, L] maps work too
    target = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    var = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    vid_nll(mean, var, target).backward()
    n = mean.numel()
    assert torch.allclose(mean.grad, (mean - target).detach() / var.detach().view(1, -1, 1) / n)
    # d/dvar of 0.5 ((d^2)/v + log v), summed over the channel's elements
    d2 = ((mean - target) ** 2).detach().sum(dim=(0, 2))
    assert torch.allclose(var.grad, 0.5 * (-d2 / var.detach() ** 2 + 8 / var.detach()) / n)
    assert torch.autograd.gradcheck(lambda m, v: vid_nll(m, v, target), (mean.detach().requires_grad_(),
                                                                         var.detach().requires_grad_()))
    # the variance parameter: its minimum is at the channel's mean squared error
    mse = ((mean - target) ** 2).detach().mean(dim=(0, 2))
    v = mse.clone().requires_grad_()
    vid_nll(mean.detach(), v, target).backward()
    assert torch.allclose(v.grad, torch.zeros_like(v), atol=1e-12)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="differ"):
        vid_nll(torch.zeros(2, 3, 4, 4), torch.ones(3), torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="one value per channel"):
        vid_nll(torch.zeros(2, 3, 4, 4), torch.ones(4), torch.zeros(2, 3, 4, 4))
