"""Pseudo-label baselines for distillation with unlabeled examples: hard, thresholded, forward-corrected."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdforge.losses import (
    confidence_mask, forward_corrected_loss, hard_pseudo_label_loss, thresholded_pseudo_label_loss,
    transition_matrix,
)


def _logits(seed: int, shape: tuple[int, int] = (6, 4)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_hard_pseudo_labels_are_ce_on_the_teachers_top1() -> None:
    s = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # p_s = [.25, .75]
    t = torch.tensor([[2.0, 1.0]], dtype=torch.float64)  # top-1 = class 0
    assert math.isclose(hard_pseudo_label_loss(s, t).item(), -math.log(0.25), rel_tol=1e-12)


def test_threshold_keeps_confident_samples_and_averages_over_the_batch() -> None:
    s, t = _logits(0), _logits(1)
    assert torch.allclose(thresholded_pseudo_label_loss(s, t, 0.0), hard_pseudo_label_loss(s, t))
    conf = F.softmax(t, 1).amax(1)
    tau = float(conf.median())
    keep = conf >= tau
    per = F.cross_entropy(s, t.argmax(1), reduction="none")
    assert torch.allclose(thresholded_pseudo_label_loss(s, t, tau), (per * keep).sum() / len(s))
    assert torch.equal(confidence_mask(t, tau), keep.double())
    assert thresholded_pseudo_label_loss(s, t, 1.0) == 0  # no teacher is that sure: nothing kept


def test_transition_matrix_counts_and_smoothing() -> None:
    true, noisy = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    assert torch.allclose(transition_matrix(true, noisy, 2, smoothing=0.0), torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.allclose(transition_matrix(true, noisy, 2), torch.tensor([[0.5, 0.5], [1 / 3, 2 / 3]]))
    assert torch.allclose(transition_matrix(true, noisy, 3)[2], torch.full((3,), 1 / 3))  # a class never seen


def test_forward_correction_hand_value_and_identity() -> None:
    # f = [.7, .3], T = [[.8, .2], [.1, .9]], noisy label 1: (T^T f)_1 = .7 * .2 + .3 * .9 = .41.
    s = torch.tensor([[math.log(0.7), math.log(0.3)]], dtype=torch.float64)
    T = torch.tensor([[0.8, 0.2], [0.1, 0.9]], dtype=torch.float64)
    assert math.isclose(forward_corrected_loss(s, torch.tensor([1]), T).item(), -math.log(0.41), rel_tol=1e-9)
    soft = torch.tensor([[0.25, 0.75]], dtype=torch.float64)  # (T^T f)_0 = .56 + .03 = .59
    expected = -(0.25 * math.log(0.59) + 0.75 * math.log(0.41))
    assert math.isclose(forward_corrected_loss(s, soft, T).item(), expected, rel_tol=1e-9)
    z, y = _logits(2), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(forward_corrected_loss(z, y, torch.eye(4, dtype=torch.float64)), F.cross_entropy(z, y))


def test_forward_correction_gradcheck() -> None:
    T = torch.softmax(_logits(3, (4, 4)), 1)
    z = _logits(4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: forward_corrected_loss(x, torch.tensor([0, 1, 2, 3, 0, 1]), T), (z,))
