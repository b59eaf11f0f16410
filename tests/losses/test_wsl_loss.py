"""wsl_loss (Zhou et al., ICLR 2021) against the official code, hand values, limits and its stop-gradient weight."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdforge.losses import hard_cross_entropy, soft_cross_entropy, wsl_loss, wsl_weights


def _logits(seed: int, shape: tuple[int, int] = (8, 5), scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _labels(seed: int, n: int = 8, c: int = 5) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def official_soft_loss(fc_s: torch.Tensor, fc_t: torch.Tensor, label: torch.Tensor, T: float) -> torch.Tensor:
    """bellymonster/Weighted-Soft-Label-Distillation knowledge_distiller.py L58-79, line by line (CPU, any C).

    The official `nn.LogSoftmax()` has no dim; on 2-D input the implicit dim is 1, written out here.
    """
    softmax, logsoftmax = nn.Softmax(dim=1), nn.LogSoftmax(dim=1)
    s_input_for_softmax = fc_s / T
    t_input_for_softmax = fc_t / T
    t_soft_label = softmax(t_input_for_softmax)
    softmax_loss = -torch.sum(t_soft_label * logsoftmax(s_input_for_softmax), 1, keepdim=True)
    fc_s_auto = fc_s.detach()
    fc_t_auto = fc_t.detach()
    log_softmax_s = logsoftmax(fc_s_auto)
    log_softmax_t = logsoftmax(fc_t_auto)
    one_hot_label = F.one_hot(label, num_classes=fc_s.shape[1]).to(fc_s.dtype)
    softmax_loss_s = -torch.sum(one_hot_label * log_softmax_s, 1, keepdim=True)
    softmax_loss_t = -torch.sum(one_hot_label * log_softmax_t, 1, keepdim=True)
    focal_weight = softmax_loss_s / (softmax_loss_t + 1e-7)
    ratio_lower = torch.zeros(1, dtype=fc_s.dtype)
    focal_weight = torch.max(focal_weight, ratio_lower)
    focal_weight = 1 - torch.exp(-focal_weight)
    softmax_loss = focal_weight * softmax_loss
    return (T**2) * torch.mean(softmax_loss)


def test_equals_official_code_value_and_gradient() -> None:
    for seed, T in [(0, 2.0), (1, 4.0), (2, 1.0)]:
        y = _labels(seed)
        s1, s2 = _logits(seed).requires_grad_(), _logits(seed).requires_grad_()
        t = _logits(seed + 100)
        ours, ref = wsl_loss(s1, t, y, T), official_soft_loss(s2, t, y, T)
        assert torch.allclose(ours, ref, rtol=1e-12)
        ours.backward()
        ref.backward()
        assert torch.allclose(s1.grad, s2.grad, rtol=1e-10, atol=1e-14)


def test_two_sample_hand_value() -> None:
    # Two classes, T = 2. With softmax p = [e^a, e^b] / (e^a + e^b):
    #   sample 1: s = [2, 0], t = [0, 1], y = 0;  sample 2: s = [0, 0], t = [1, 0], y = 1.
    def log_p(z: list[float], c: int) -> float:
        return z[c] - math.log(sum(math.exp(v) for v in z))

    def soft_ce(s: list[float], t: list[float], T: float) -> float:
        st, tt = [v / T for v in s], [v / T for v in t]
        return -sum(math.exp(log_p(tt, c)) * log_p(st, c) for c in range(2))

    T, expected = 2.0, 0.0
    cases = [([2.0, 0.0], [0.0, 1.0], 0), ([0.0, 0.0], [1.0, 0.0], 1)]
    for s, t, y in cases:
        ratio = -log_p(s, y) / (-log_p(t, y) + 1e-7)
        expected += (1 - math.exp(-ratio)) * soft_ce(s, t, T)
    expected *= T**2 / 2
    s = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    t = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    y = torch.tensor([c[2] for c in cases])
    assert math.isclose(wsl_loss(s, t, y, T).item(), expected, rel_tol=1e-12)


def test_soft_term_is_cross_entropy_not_kl() -> None:
    # Equal student and teacher logits: KL would be 0, the official CE term is the teacher entropy (> 0).
    z, y = _logits(3), _labels(3)
    assert wsl_loss(z, z.clone(), y) > 0.1


def test_student_far_worse_than_teacher_gives_full_weight() -> None:
    # Teacher certain and right (CE_t ~ 0), student wrong (CE_s >> 0): w -> 1, loss = T^2 mean(soft CE).
    y, T = _labels(4), 2.0
    t = 30.0 * F.one_hot(y, 5).double()
    s = -5.0 * F.one_hot(y, 5).double() + _logits(5, scale=0.1)
    assert torch.allclose(wsl_weights(s, t, y), torch.ones(8, dtype=torch.float64))
    assert torch.isclose(wsl_loss(s, t, y, T), T**2 * soft_cross_entropy(s, t, T).mean())


def test_perfect_student_gives_zero_weight_and_loss() -> None:
    y = _labels(6)
    s = 50.0 * F.one_hot(y, 5).double()  # CE_s ~ 4 e^-50
    t = _logits(7)
    assert wsl_weights(s, t, y).max() < 1e-15
    assert wsl_loss(s, t, y) < 1e-12


def test_perfect_teacher_keeps_the_ratio_finite() -> None:
    # CE_t underflows to exactly 0 in float32: the 1e-7 of the official code keeps w finite (= 1).
    y = torch.tensor([0, 1])
    t = torch.tensor([[500.0, -500.0, 0.0], [0.0, 500.0, -500.0]])
    s = torch.zeros(2, 3)
    assert torch.equal(hard_cross_entropy(t, y, reduction="none"), torch.zeros(2))
    assert torch.equal(wsl_weights(s, t, y), torch.ones(2))
    assert torch.isfinite(wsl_loss(s, t, y))


def test_weight_is_a_constant_for_autograd() -> None:
    s = _logits(8).requires_grad_()
    t, y, T = _logits(9), _labels(8), 2.0
    w = wsl_weights(s, t, y)
    assert not w.requires_grad
    wsl_loss(s, t, y, T).backward()
    # d/ds of T^2/B * sum_i w_i * CE(p_t,i, p_s,i) with w held fixed: T * w_i * (p_s - p_t) / B.
    p_s, p_t = torch.softmax(s.detach() / T, 1), torch.softmax(t / T, 1)
    expected = T * w[:, None] * (p_s - p_t) / s.shape[0]
    assert torch.allclose(s.grad, expected, atol=1e-14)


def test_gradcheck_where_weight_is_saturated() -> None:
    # With CE_t ~ 0 the weight is exactly 1 in float64 around the point, so the full function is smooth there.
    y = _labels(10, n=3, c=4)
    t = (40.0 * F.one_hot(y, 4).double()).requires_grad_()
    s = _logits(11, (3, 4)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: wsl_loss(a, b, y, 2.0), (s, t))


def test_numerical_gradient_disagrees_where_weight_varies() -> None:
    # Finite differences see w move with s; autograd does not (the weight is stop-gradient, as official).
    s = _logits(12, (3, 4)).requires_grad_()
    t, y = _logits(13, (3, 4)), _labels(12, n=3, c=4)
    ok = torch.autograd.gradcheck(lambda a: wsl_loss(a, t, y, 2.0), (s,), raise_exception=False)
    assert not ok


def test_mixup_distribution_labels() -> None:
    s, t, T, lam = _logits(14), _logits(15), 2.0, 0.35
    ya, yb = _labels(14), _labels(15)
    mixed = lam * F.one_hot(ya, 5).double() + (1 - lam) * F.one_hot(yb, 5).double()

    def ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, y, reduction="none")

    ce_s = lam * ce(s, ya) + (1 - lam) * ce(s, yb)
    ce_t = lam * ce(t, ya) + (1 - lam) * ce(t, yb)
    w = 1 - torch.exp(-ce_s / (ce_t + 1e-7))
    expected = T**2 * (w * soft_cross_entropy(s, t, T)).mean()
    assert torch.allclose(wsl_loss(s, t, mixed, T), expected, rtol=1e-12)


def test_one_hot_distribution_equals_index_labels() -> None:
    s, t, y = _logits(16), _logits(17), _labels(16)
    assert torch.allclose(wsl_loss(s, t, F.one_hot(y, 5).double()), wsl_loss(s, t, y), rtol=1e-12)
