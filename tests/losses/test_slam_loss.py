"""SLaM's mixing loss (Kontonis et al., NeurIPS 2023) and its α / k estimation: hand values, limits, gradcheck."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import (
    alpha_summary, alpha_sums, calibrate_slam, choose_k, fit_isotonic, indifference_alpha, isotonic_predict,
    resolve_alpha_floor, slam_loss, slam_mix, slam_target, soft_cross_entropy, teacher_confidence,
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
        got = slam_loss(s, t, alpha, 2, normalize, target="soft").item()
        assert math.isclose(got, ce([0.5, 0.38, 0.16]), rel_tol=1e-9)
    # k = 3, every class: unnormalised mix = [.5, .38, .32]; normalised halves the wrong-label term: [.45, .31, .24]
    got = slam_loss(s, t, alpha, 3, normalize=False, target="soft").item()
    assert math.isclose(got, ce([0.5, 0.38, 0.32]), rel_tol=1e-9)
    got = slam_loss(s, t, alpha, 3, normalize=True, target="soft").item()
    assert math.isclose(got, ce([0.45, 0.31, 0.24]), rel_tol=1e-9)
    # k = 2: hard = -log .5; soft_topk = the teacher's [.6, .3] renormalised to [2/3, 1/3] on the mix [.5, .38, .16]
    assert math.isclose(slam_loss(s, t, alpha, 2, target="hard").item(), -math.log(0.5), rel_tol=1e-9)
    got = slam_loss(s, t, alpha, 2, target="soft_topk").item()
    assert math.isclose(got, -(2 / 3 * math.log(0.5) + 1 / 3 * math.log(0.38)), rel_tol=1e-9)


def test_always_right_teacher_reduces_to_distillation() -> None:
    s, t = _logits(0), _logits(1)
    ones = torch.ones(len(s), dtype=torch.float64)
    for k in (2, 3, 5):
        for normalize in (False, True):
            expected = soft_cross_entropy(s, t, 1.0).mean()
            assert torch.allclose(slam_loss(s, t, ones, k, normalize, target="soft"), expected, rtol=1e-10)
            # soft_topk: CE against the teacher's top k, renormalised (its logits elsewhere at -inf)
            kept = t.masked_fill(top_k_mask(t, k) == 0, -math.inf)
            expected = -(kept.softmax(1) * s.log_softmax(1)).nan_to_num().sum(1).mean()
            assert torch.allclose(slam_loss(s, t, ones, k, normalize, target="soft_topk"), expected, rtol=1e-10)
    hard = F.cross_entropy(s, t.argmax(1))
    assert torch.allclose(slam_loss(s, t, ones, 2, target="hard"), hard, rtol=1e-10)
    assert torch.allclose(slam_loss(s, t, ones, 2), hard, rtol=1e-10)  # hard is the default


@pytest.mark.parametrize("k,normalize,hard", [(2, False, True), (2, True, True), (3, True, True), (5, True, False)])
def test_teacher_at_chance_gives_no_gradient_so_the_labeled_loss_decides(k: int, normalize: bool, hard: bool) -> None:
    # α = 1/k: the teacher's label is uniform over its top k whatever the truth; mix = 1/k on the mask for every f.
    # The target must lie in the mask: the teacher's top-1 (hard), or a soft label with k = all 5 classes.
    s = _logits(2).requires_grad_()
    t = _logits(3)
    loss = slam_loss(s, t, torch.full((len(s),), 1 / k, dtype=torch.float64), k, normalize,
                     target="hard" if hard else "soft")
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
                     target="hard")
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
        for target in ("hard", "soft_topk", "soft"):
            assert torch.autograd.gradcheck(lambda z: slam_loss(z, t, alpha, 3, normalize, target, 0.4), (s,))


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


@pytest.mark.parametrize("normalize,k", [(False, 2), (False, 3), (True, 2), (True, 3), (True, 4), (True, 5)])
def test_below_the_indifference_alpha_the_mix_reverses_and_the_floor_switches_it_off(normalize: bool, k: int) -> None:
    # On the mask, mix_c = a f_c + b with a = α - (1 - α)/Z: a = 0 at α* = 1/(1 + Z) (1/2 un-normalised, 1/k normalised).
    star = indifference_alpha(k, normalize)
    assert star == (1 / k if normalize else 0.5) and resolve_alpha_floor("auto", k, normalize) == star
    s, t = _logits(9, (6, 5)).requires_grad_(), _logits(10, (6, 5))
    top1 = t.argmax(1)
    for target in ("hard", "soft_topk"):
        below = slam_loss(s, t, torch.full((6,), star - 0.1, dtype=torch.float64), k, normalize, target)
        (grad,) = torch.autograd.grad(below, s)
        assert (grad.gather(1, top1[:, None]) > 0).all()  # gradient descent lowers the teacher's top-1 logit
        floored = slam_loss(s, t, torch.full((6,), star - 0.1, dtype=torch.float64), k, normalize, target, star)
        at_star = slam_loss(s, t, torch.full((6,), star, dtype=torch.float64), k, normalize, target)
        (grad,) = torch.autograd.grad(floored, s)
        assert torch.equal(floored, at_star) and (grad == 0).all()  # exactly flat (1/3, 1/5 included): switched off
        above = slam_loss(s, t, torch.full((6,), star + 0.1, dtype=torch.float64), k, normalize, target, star)
        (grad,) = torch.autograd.grad(above, s)
        assert (grad.gather(1, top1[:, None]) < 0).all()  # above the floor it pulls toward the teacher's top-1


def test_the_floor_leaves_alpha_above_it_alone_and_resolves_its_settings() -> None:
    s, t = _logits(11), _logits(12)
    alpha = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6, 0.75], dtype=torch.float64)
    assert torch.equal(slam_loss(s, t, alpha, 3, alpha_floor=0.5), slam_loss(s, t, alpha, 3))
    assert resolve_alpha_floor("none", 3, True) is None and resolve_alpha_floor(0.3, 3, False) == 0.3
    assert resolve_alpha_floor("auto", 5, True) == 0.2 and resolve_alpha_floor("auto", 5, False) == 0.5


def test_soft_target_rewards_mass_outside_the_top_k() -> None:
    # One example, k = 2, α = .8, teacher [.5, .3, .2]: moving student mass from the teacher's top-2 to class 2
    # lowers the soft loss below its value at f = the teacher's own distribution; soft_topk and hard have no such term.
    t = _probs_as_logits([0.5, 0.3, 0.2])
    alpha = torch.tensor([0.8], dtype=torch.float64)
    at_teacher = _probs_as_logits([0.5, 0.3, 0.2])
    moved = _probs_as_logits([0.45, 0.25, 0.3])
    assert slam_loss(moved, t, alpha, 2, target="soft") < slam_loss(at_teacher, t, alpha, 2, target="soft")
    for target in ("soft_topk", "hard"):
        assert slam_loss(moved, t, alpha, 2, target=target) > slam_loss(at_teacher, t, alpha, 2, target=target)


def test_slam_target_forms() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]], dtype=torch.float64)
    mask = top_k_mask(p, 2)
    assert torch.equal(slam_target(p, mask, "hard"), torch.tensor([[1.0, 0, 0], [0, 0, 1]], dtype=torch.float64))
    assert torch.allclose(slam_target(p, mask, "soft_topk"),
                          torch.tensor([[0.625, 0.375, 0], [0, 2 / 9, 7 / 9]], dtype=torch.float64))
    assert torch.equal(slam_target(p, mask, "soft"), p)
    with pytest.raises(ValueError, match="target must be"):
        slam_target(p, mask, "sharp")  # type: ignore[arg-type]


def test_alpha_sums_and_summary_hand_values() -> None:
    # α = [0, .3, .6, 1] with k = 4 (1/k = .25); teacher rows: one-hot-ish and uniform over 5 classes.
    alpha = torch.tensor([0.0, 0.3, 0.6, 1.0])
    logits = torch.stack([torch.tensor([10.0, 0, 0, 0, 0]), torch.zeros(5), torch.zeros(5), torch.zeros(5)])
    sums = alpha_sums(alpha, logits, 4)
    outside_first = 1 - (math.exp(10) + 3) / (math.exp(10) + 4)  # the row's 5th class
    assert torch.allclose(sums, torch.tensor([4, 1.9, 1, 2, 1, outside_first + 3 * 0.2], dtype=torch.float64))
    summary = alpha_summary(sums)
    assert summary == pytest.approx({"alpha_mean": 1.9 / 4, "alpha_zero_share": 0.25, "alpha_below_half_share": 0.5,
                                     "alpha_below_1_over_k_share": 0.25,
                                     "teacher_mass_outside_topk": (outside_first + 0.6) / 4})


def test_calibrate_slam_is_the_isotonic_fit_and_choose_k() -> None:
    logits, labels = _logits(13, (200, 6)), torch.arange(200) % 6
    knots, k = calibrate_slam(logits, labels, "max_prob", 0.7)
    expected = fit_isotonic(teacher_confidence(logits, "max_prob"), logits.argmax(1).eq(labels).float())
    assert all(torch.equal(a, b) for a, b in zip(knots, expected))
    assert k == choose_k(top_k_accuracy_curve(logits, labels), 0.7)
