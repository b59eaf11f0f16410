"""SLaM's mixing loss (Kontonis et al., NeurIPS 2023) and its α / k estimation: hand values, limits, gradcheck."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import (
    choose_k, fit_isotonic, isotonic_predict, slam_loss, slam_mix, soft_cross_entropy, teacher_confidence,
    top_k_accuracy_curve, top_k_mask,
)


def _logits(seed: int, shape: tuple[int, int] = (6, 5), scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _probs_as_logits(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


def test_hand_values_unnormalised_and_normalised() -> None:
    # f = [.5, .3, .2], teacher y_s = [.6, .3, .1], α = .8.
    s, t = _probs_as_logits([0.5, 0.3, 0.2]), _probs_as_logits([0.6, 0.3, 0.1])
    ce = lambda mix: -(0.6 * math.log(mix[0]) + 0.3 * math.log(mix[1]) + 0.1 * math.log(mix[2]))  # noqa: E731
    alpha = torch.tensor([0.8], dtype=torch.float64)
    # k = 2, mask [1, 1, 0]: mix = .8 f + .2 (1 - f) mask = [.4 + .1, .24 + .14, .16] (k - 1 = 1: both forms agree)
    for normalize in (False, True):
        assert math.isclose(slam_loss(s, t, alpha, 2, normalize).item(), ce([0.5, 0.38, 0.16]), rel_tol=1e-9)
    # k = 3, every class: unnormalised mix = [.5, .38, .32]; normalised halves the wrong-label term: [.45, .31, .24]
    assert math.isclose(slam_loss(s, t, alpha, 3, normalize=False).item(), ce([0.5, 0.38, 0.32]), rel_tol=1e-9)
    assert math.isclose(slam_loss(s, t, alpha, 3, normalize=True).item(), ce([0.45, 0.31, 0.24]), rel_tol=1e-9)


def test_always_right_teacher_reduces_to_distillation() -> None:
    s, t = _logits(0), _logits(1)
    ones = torch.ones(len(s), dtype=torch.float64)
    for k in (2, 3, 5):
        for normalize in (False, True):
            expected = soft_cross_entropy(s, t, 1.0).mean()
            assert torch.allclose(slam_loss(s, t, ones, k, normalize), expected, rtol=1e-10)
    hard = F.cross_entropy(s, t.argmax(1))
    assert torch.allclose(slam_loss(s, t, ones, 2, hard_target=True), hard, rtol=1e-10)


@pytest.mark.parametrize("k,normalize,hard", [(2, False, True), (2, True, True), (3, True, True), (5, True, False)])
def test_teacher_at_chance_gives_no_gradient_so_the_labeled_loss_decides(k: int, normalize: bool, hard: bool) -> None:
    # α = 1/k: the teacher's label is uniform over its top k whatever the truth; mix = 1/k on the mask for every f.
    # The target must lie in the mask: the teacher's top-1 (hard), or a soft label with k = all 5 classes.
    s = _logits(2).requires_grad_()
    t = _logits(3)
    loss = slam_loss(s, t, torch.full((len(s),), 1 / k, dtype=torch.float64), k, normalize, hard_target=hard)
    (grad,) = torch.autograd.grad(loss, s, retain_graph=True)
    assert torch.allclose(loss, torch.tensor(math.log(k), dtype=torch.float64))
    assert grad.abs().max() < 1e-12
    # The same student with a labeled term: the total gradient is the labeled CE's alone.
    y = torch.arange(len(s)) % s.shape[1]
    (total,) = torch.autograd.grad(loss + F.cross_entropy(s, y), s)
    (labeled,) = torch.autograd.grad(F.cross_entropy(s, y), s)
    assert torch.allclose(total, labeled, atol=1e-12)


def test_unnormalised_form_with_k_above_two_still_pushes_at_chance() -> None:
    # Remark B.1's form is not a probability model for k > 2: at α = 1/k it is not constant in f.
    s = _logits(4).requires_grad_()
    loss = slam_loss(s, _logits(5), torch.full((len(s),), 1 / 3, dtype=torch.float64), 3, normalize=False,
                     hard_target=True)
    assert torch.autograd.grad(loss, s)[0].abs().max() > 1e-3


def test_normalised_mix_is_a_distribution_when_the_mask_covers_every_class() -> None:
    f = F.softmax(_logits(6), dim=1)
    alpha = torch.rand(len(f), dtype=torch.float64)
    mix = slam_mix(f, alpha, torch.ones_like(f), normalize=True)
    assert torch.allclose(mix.sum(1), torch.ones(len(f), dtype=torch.float64))


def test_top_k_mask_per_row() -> None:
    p = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.1, 0.2]])
    assert torch.equal(top_k_mask(p, 2), torch.tensor([[0.0, 1, 1], [1, 0, 1]]))
    assert torch.equal(top_k_mask(p, torch.tensor([1, 3])), torch.tensor([[0.0, 1, 0], [1, 1, 1]]))


def test_gradcheck() -> None:
    s = _logits(7, (4, 4)).requires_grad_()
    t, alpha = _logits(8, (4, 4)), torch.tensor([0.9, 0.5, 0.3, 0.7], dtype=torch.float64)
    for normalize in (False, True):
        assert torch.autograd.gradcheck(lambda z: slam_loss(z, t, alpha, 3, normalize), (s,))


def test_isotonic_fit_hand_value_and_prediction() -> None:
    # y = [1, 0, 1] on x = [1, 2, 3]: the violation (1, 0) pools to .5, .5; then 1.
    kx, ky = fit_isotonic(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(ky, torch.tensor([0.5, 0.5, 1.0]))
    got = isotonic_predict(kx, ky, torch.tensor([0.0, 1.5, 2.5, 9.0]))
    assert torch.allclose(got, torch.tensor([0.5, 0.5, 0.75, 1.0]))  # clipped ends, linear in between
    # Equal x pool first: x = [1, 1, 2], y = [0, 1, 0] -> (1: .5, w 2), (2: 0) -> pooled 1/3 each.
    kx, ky = fit_isotonic(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(kx, torch.tensor([1.0, 2.0])) and torch.allclose(ky, torch.full((2,), 1 / 3))


def test_isotonic_matches_scikit_learn() -> None:
    isotonic = pytest.importorskip("sklearn.isotonic")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, generator=g).round(decimals=2)  # ties included
    y = (torch.rand(300, generator=g) < x).float()
    ref = isotonic.IsotonicRegression(out_of_bounds="clip").fit(x.numpy(), y.numpy())
    grid = torch.linspace(-0.1, 1.1, 97)
    mine = isotonic_predict(*fit_isotonic(x, y), grid)
    assert torch.allclose(mine, torch.from_numpy(ref.predict(grid.numpy())).float(), atol=1e-5)
    assert (mine.diff() >= 0).all()


def test_confidence_top_k_accuracy_and_k() -> None:
    logits = _probs_as_logits([0.6, 0.3, 0.1], [0.2, 0.5, 0.3])
    assert torch.allclose(teacher_confidence(logits, "margin"), torch.tensor([0.3, 0.2], dtype=torch.float32))
    assert torch.allclose(teacher_confidence(logits, "max_prob"), torch.tensor([0.6, 0.5], dtype=torch.float32))
    curve = top_k_accuracy_curve(logits, torch.tensor([1, 0]))  # ranks of the labels: 1 and 2
    assert torch.allclose(curve, torch.tensor([0.0, 0.5, 1.0]))
    assert choose_k(curve, 0.5) == 2 and choose_k(curve, 0.9) == 3 and choose_k(torch.tensor([0.95, 1.0]), 0.9) == 2
