"""dkd_loss (Zhao et al. 2022): mdistiller's function line by line, the KD = TCKD + (1 - p_t) NCKD identity,
a hand value, gradcheck, and the refusal of mixed labels."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import dkd_loss, dkd_terms, kd_loss


# ---- megvii-research/mdistiller@a08d46f mdistiller/distillers/DKD.py L8-51, verbatim but for
# size_average=False, which is reduction="sum" (the deprecated flag's meaning).
def _ref_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = (
        F.kl_div(log_pred_student, pred_teacher, reduction="sum")
        * (temperature**2)
        / target.shape[0]
    )
    pred_teacher_part2 = F.softmax(
        logits_teacher / temperature - 1000.0 * gt_mask, dim=1
    )
    log_pred_student_part2 = F.log_softmax(
        logits_student / temperature - 1000.0 * gt_mask, dim=1
    )
    nckd_loss = (
        F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
        * (temperature**2)
        / target.shape[0]
    )
    return alpha * tckd_loss + beta * nckd_loss


def _get_gt_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()
    return mask


def _get_other_mask(logits, target):
    target = target.reshape(-1)
    mask = torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()
    return mask


def cat_mask(t, mask1, mask2):
    t1 = (t * mask1).sum(dim=1, keepdims=True)
    t2 = (t * mask2).sum(1, keepdims=True)
    rt = torch.cat([t1, t2], dim=1)
    return rt
# ---- end of the reference


def _data(seed: int, b: int = 8, c: int = 10, dtype=torch.float64, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g, dtype=dtype) * scale
    t = torch.randn(b, c, generator=g, dtype=dtype) * scale
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 3.0), (0.0, 1.0, 6.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_mdistiller_value_and_gradient(alpha, beta, T, dtype):
    s, t, y = _data(1, dtype=dtype)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    ours, ref = dkd_loss(s1, t, y, alpha, beta, T), _ref_dkd_loss(s2, t, y, alpha, beta, T)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(ours, ref, rtol=tol, atol=tol)
    ours.backward()
    ref.backward()
    assert torch.allclose(s1.grad, s2.grad, rtol=tol, atol=tol)


def test_defaults_are_mdistillers():
    s, t, y = _data(2)
    assert torch.allclose(dkd_loss(s, t, y), _ref_dkd_loss(s, t, y, 1.0, 8.0, 4.0))


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_classical_kd_is_tckd_plus_one_minus_p_target_times_nckd(T):
    """Sec. 3.1: KD = TCKD + (1 - p_t^T) NCKD, per sample; dkd_loss on one sample with alpha = 1 and
    beta = 1 - p_t^T reproduces kd_loss on it, while the default beta = 8 does not."""
    s, t, y = _data(3, b=6)
    p_target = F.softmax(t / T, dim=1).gather(1, y[:, None]).squeeze(1)
    for i in range(len(y)):
        one = slice(i, i + 1)
        kd = kd_loss(s[one], t[one], T)
        assert torch.allclose(dkd_loss(s[one], t[one], y[one], 1.0, float(1 - p_target[i]), T), kd, rtol=1e-12)
        assert not torch.allclose(dkd_loss(s[one], t[one], y[one], 1.0, 8.0, T), kd)
    tckd, nckd = dkd_terms(s, t, y, T)
    assert torch.allclose(tckd + (1 - p_target) * nckd, T**2 * (F.softmax(t / T, 1) * (
        F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1), rtol=1e-12)


def test_hand_value_three_classes():
    # T = 1, label 0. Student logits [0, 0, 0] -> p_s = [1/3, 1/3, 1/3]; teacher [log 2, 0, 0] -> p_t = [1/2, 1/4, 1/4].
    # TCKD = KL([1/2, 1/2] || [1/3, 2/3]) = 1/2 log(3/2) + 1/2 log(3/4); non-target softmaxes are both
    # [1/2, 1/2], so NCKD = 0. alpha = 2 doubles TCKD.
    s = torch.zeros(1, 3, dtype=torch.float64)
    t = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    tckd = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    assert dkd_loss(s, t, y, 2.0, 8.0, 1.0).item() == pytest.approx(2 * tckd, rel=1e-12)
    # a non-target mismatch: teacher [0, log 3, 0] with label 0 -> p-hat_t = [3/4, 1/4] vs p-hat_s = [1/2, 1/2]
    t2 = torch.tensor([[0.0, math.log(3.0), 0.0]], dtype=torch.float64)
    nckd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    tckd2 = 0.2 * math.log(0.2 / (1 / 3)) + 0.8 * math.log(0.8 / (2 / 3))
    assert dkd_loss(s, t2, y, 1.0, 8.0, 1.0).item() == pytest.approx(tckd2 + 8 * nckd, rel=1e-12)


def test_zero_when_student_equals_teacher_and_temperature_squared():
    s, t, y = _data(4)
    assert dkd_loss(s, s.clone(), y).abs() < 1e-12
    # logits scaled with T give the same softmaxes, so only the T^2 factor changes
    assert torch.allclose(dkd_loss(2 * s, 2 * t, y, 1.0, 8.0, 2.0), 4 * dkd_loss(s, t, y, 1.0, 8.0, 1.0))


def test_gradcheck():
    s, t, y = _data(5, b=4, c=5, scale=1.0)
    s.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: dkd_loss(a, t, y, 1.0, 8.0, 4.0), (s,))
    assert torch.autograd.gradcheck(lambda a: dkd_loss(a, t, y, 0.7, 2.0, 1.0), (s,))


def test_mixed_label_distributions_are_refused():
    s, t, y = _data(6)
    mixed = 0.6 * F.one_hot(y, 10).double() + 0.4 * F.one_hot(y.roll(1), 10).double()
    with pytest.raises(ValueError, match=r"class indices .*labels\.argmax\(dim=1\)"):
        dkd_loss(s, t, mixed)
