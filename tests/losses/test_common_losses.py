"""The shared KL / CE helpers against their definitions."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kdforge.losses import hard_cross_entropy, kl_div_with_temperature, soft_cross_entropy, soft_targets


def _logits(seed: int, shape: tuple[int, int] = (5, 7)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_soft_targets_sum_to_one_and_flatten_with_temperature() -> None:
    z = _logits(0)
    assert torch.allclose(soft_targets(z, 3.0).sum(1), torch.ones(5, dtype=torch.float64))
    assert soft_targets(z, 10.0).max() < soft_targets(z, 1.0).max()


def test_kl_per_sample_matches_definition_and_batchmean_is_its_mean() -> None:
    s, t, T = _logits(1), _logits(2), 2.5
    p, q = soft_targets(t, T), soft_targets(s, T)
    expected = (p * (p.log() - q.log())).sum(1)
    per_sample = kl_div_with_temperature(s, t, T)
    assert per_sample.shape == (5,)
    assert torch.allclose(per_sample, expected)
    assert torch.allclose(kl_div_with_temperature(s, t, T, reduction="batchmean"), expected.mean())


def test_soft_cross_entropy_is_kl_plus_teacher_entropy() -> None:
    s, t, T = _logits(3), _logits(4), 2.0
    p = soft_targets(t, T)
    entropy = -(p * p.log()).sum(1)
    assert torch.allclose(soft_cross_entropy(s, t, T), kl_div_with_temperature(s, t, T) + entropy)


def test_hard_cross_entropy_indices_and_distribution() -> None:
    z = _logits(5)
    y = torch.tensor([0, 6, 2, 2, 1])
    log_p = z - z.exp().sum(1, keepdim=True).log()
    assert torch.allclose(hard_cross_entropy(z, y, reduction="none"), -log_p[torch.arange(5), y])
    # A mixup target: the CE is linear in the label distribution.
    lam = 0.3
    y2 = torch.tensor([1, 1, 5, 0, 3])
    mixed = lam * F.one_hot(y, 7).double() + (1 - lam) * F.one_hot(y2, 7).double()
    expected = lam * hard_cross_entropy(z, y) + (1 - lam) * hard_cross_entropy(z, y2)
    assert torch.allclose(hard_cross_entropy(z, mixed), expected)


def test_hard_cross_entropy_label_smoothing() -> None:
    z, y, eps = _logits(6), torch.tensor([0, 1, 2, 3, 4]), 0.1
    smoothed = (1 - eps) * F.one_hot(y, 7).double() + eps / 7
    assert torch.allclose(hard_cross_entropy(z, y, label_smoothing=eps), hard_cross_entropy(z, smoothed))


def test_helpers_gradcheck_float64() -> None:
    s = _logits(7, (3, 4)).requires_grad_()
    t = _logits(8, (3, 4)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kl_div_with_temperature(a, b, 1.7), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: soft_cross_entropy(a, b, 1.7), (s, t))
