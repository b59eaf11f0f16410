"""kd_loss (Hinton et al. 2015) against hand values, limits and its closed-form gradient."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdforge.losses import kd_loss


def _logits(seed: int, shape: tuple[int, int] = (6, 5), scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def test_equal_logits_give_zero() -> None:
    z = _logits(0)
    for T in (1.0, 4.0, 20.0):
        assert kd_loss(z, z.clone(), T).abs() < 1e-12


def test_two_class_hand_value() -> None:
    # Sample 1: s = [1, 0], t = [0, 1] at T = 2, so s/T = [.5, 0], t/T = [0, .5]. With a = e^.5:
    #   p_t = [1/(1+a), a/(1+a)], p_s = [a/(1+a), 1/(1+a)]
    #   KL = 1/(1+a) * log(1/a) + a/(1+a) * log(a) = 0.5 * (a-1)/(a+1); times T^2 = 4.
    # Sample 2 has equal logits (KL = 0), so the batch mean halves it.
    a = math.exp(0.5)
    p_t = [1 / (1 + a), a / (1 + a)]
    p_s = [a / (1 + a), 1 / (1 + a)]
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    assert math.isclose(kl, 0.5 * (a - 1) / (a + 1))
    expected = 4 * kl / 2
    s = torch.tensor([[1.0, 0.0], [0.3, -0.2]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0], [0.3, -0.2]], dtype=torch.float64)
    assert math.isclose(kd_loss(s, t, temperature=2.0).item(), expected, rel_tol=1e-12)


def test_high_temperature_limit_is_centered_logit_matching() -> None:
    # T^2 KL -> 1/(2C) * sum_c ((s_c - mean s) - (t_c - mean t))^2 as T -> inf (Hinton et al. 2015, Sec. 2.1).
    s, t, T = _logits(1), _logits(2), 1000.0
    C = s.shape[1]
    d = (s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))
    limit = (d**2).sum(1).mean() / (2 * C)
    assert torch.isclose(kd_loss(s, t, T), limit, rtol=1e-2)


def test_gradient_matches_closed_form() -> None:
    s = _logits(3).requires_grad_()
    t = _logits(4)
    T, B = 3.0, s.shape[0]
    kd_loss(s, t, T).backward()
    expected = (torch.softmax(s.detach() / T, 1) - torch.softmax(t / T, 1)) * T / B
    assert torch.allclose(s.grad, expected, atol=1e-12)


def test_gradcheck_float64() -> None:
    s = _logits(5, (3, 4)).requires_grad_()
    t = _logits(6, (3, 4)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(a, b, 2.5), (s, t))


def test_peaked_teacher_at_t1_equals_hard_cross_entropy() -> None:
    # A one-hot teacher has zero entropy, so KL(onehot_y || p_s) = -log p_s[y].
    s = _logits(7)
    y = torch.tensor([0, 4, 2, 1, 3, 0])
    t = 60.0 * F.one_hot(y, 5).double()
    assert torch.isclose(kd_loss(s, t, temperature=1.0), F.cross_entropy(s, y), atol=1e-9)


def test_invariant_to_per_sample_constant_shift() -> None:
    s, t = _logits(8), _logits(9)
    cs, ct = _logits(10, (6, 1)), _logits(11, (6, 1))
    assert torch.isclose(kd_loss(s + cs, t + ct, 4.0), kd_loss(s, t, 4.0), atol=1e-10)


def test_float32_peaked_logits_stay_finite() -> None:
    s = torch.tensor([[200.0, -200.0, 0.0]])
    t = torch.tensor([[-200.0, 200.0, 0.0]])
    value = kd_loss(s, t, temperature=1.0)
    assert torch.isfinite(value) and math.isclose(value.item(), 400.0, rel_tol=1e-5)
