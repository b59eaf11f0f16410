"""The layout rule of logit-level losses (losses.common): classes on the last dim, the mean over all positions, `dim`,
`mask`, `reduction`; and, on [B, C] without a mask, bit-for-bit the numbers of the implementations before the rule
(kept below as they were at baa315c)."""
from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import (
    Positions, dkd_loss, forward_corrected_loss, forward_kl_loss, generalized_jsd_loss, hard_cross_entropy,
    hard_pseudo_label_loss, kd_loss, kl_div_with_temperature, prokt_teacher_loss, reverse_kl_loss, slam_loss,
    slam_mix, slam_target, soft_cross_entropy, thresholded_pseudo_label_loss, top_k_mask, wsl_loss,
)

V = 4
TRANSITION = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.0, 0.1, 0.8, 0.1],
                           [0.1, 0.1, 0.1, 0.7]], dtype=torch.float64)


# ---- the implementations before the rule (src/kdforge/losses at baa315c), [B, C] only ------------------------
def _old_kl(s, t, T):
    return F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), reduction="none",
                    log_target=True).sum(dim=1)


def _old_soft_ce(s, t, T):
    return -(F.softmax(t / T, dim=1) * F.log_softmax(s / T, dim=1)).sum(dim=1)


def _old_wsl(s, t, y, T):
    ce_s = F.cross_entropy(s.detach(), y, reduction="none")
    ce_t = F.cross_entropy(t.detach(), y, reduction="none")
    w = 1.0 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0.0))
    return T**2 * (w * _old_soft_ce(s, t, T)).mean()


def _old_dkd(s, t, y, alpha, beta, T):
    gt = F.one_hot(y, s.shape[1]).bool()
    p_s, p_t = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
    tckd = (torch.xlogy(b_t, b_t) - b_t * torch.log(b_s)).sum(1)
    shift = 1000.0 * gt
    nckd = _old_kl(s - T * shift, t - T * shift, T)
    return (alpha * T**2 * tckd + beta * T**2 * nckd).mean()


def _old_thresholded(s, t, threshold):
    per = F.cross_entropy(s, t.argmax(dim=1), reduction="none")
    return ((F.softmax(t.float(), dim=1).amax(dim=1) >= threshold).to(t.dtype) * per).mean()


def _old_forward_corrected(s, y, transition):
    log_noisy = (F.softmax(s, dim=1) @ transition.to(s)).clamp_min(1e-12).log()
    return F.nll_loss(log_noisy, y) if y.dim() == 1 else -(y * log_noisy).sum(dim=1).mean()


def _old_slam(s, t, alpha, k, normalize, target):
    probs = F.softmax(t.to(torch.promote_types(s.dtype, torch.float32)), dim=1)
    top = top_k_mask(probs, k)
    mix = slam_mix(F.softmax(s, dim=1), alpha, top, normalize)
    return -(slam_target(probs, top, target) * mix.clamp_min(1e-7).log()).sum(dim=1).mean()


def _old_prokt(t, s, y, weight, T):
    return F.cross_entropy(t, y) + weight * _old_kl(s.detach(), t, T).mean()
# ---- end of the old implementations


def _soft(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    return F.softmax(x, dim=-1 if dim is None else dim)


def _alpha(y: torch.Tensor) -> torch.Tensor:
    return 0.35 + 0.15 * y.double()  # one α per position, derived from the labels so it moves with them


# Each entry: (new loss on (s, t, y, **rule), old loss on [B, C] rows (s, t, y)). rule = dim / mask / reduction.
LOSSES: dict[str, tuple[Callable, Callable | None]] = {
    "kd": (lambda s, t, y, **r: kd_loss(s, t, 2.0, **r), lambda s, t, y: 4.0 * _old_kl(s, t, 2.0).mean()),
    "kl": (lambda s, t, y, reduction="none", **r: kl_div_with_temperature(s, t, 1.5, reduction, **r),
           lambda s, t, y: _old_kl(s, t, 1.5)),
    "soft_ce": (lambda s, t, y, reduction="none", **r: soft_cross_entropy(s, t, 3.0, reduction, **r),
                lambda s, t, y: _old_soft_ce(s, t, 3.0)),
    "hard_ce": (lambda s, t, y, **r: hard_cross_entropy(s, y, 0.1, **r),
                lambda s, t, y: F.cross_entropy(s, y, label_smoothing=0.1)),
    "hard_ce_dist": (lambda s, t, y, **r: hard_cross_entropy(s, _soft(t, r.get("dim")), **r),
                     lambda s, t, y: F.cross_entropy(s, F.softmax(t, dim=1))),
    "wsl": (lambda s, t, y, **r: wsl_loss(s, t, y, 2.0, **r), lambda s, t, y: _old_wsl(s, t, y, 2.0)),
    "dkd": (lambda s, t, y, **r: dkd_loss(s, t, y, 1.0, 8.0, 4.0, **r),
            lambda s, t, y: _old_dkd(s, t, y, 1.0, 8.0, 4.0)),
    "hard_pseudo": (lambda s, t, y, **r: hard_pseudo_label_loss(s, t, **r),
                    lambda s, t, y: F.cross_entropy(s, t.argmax(dim=1))),
    "thresholded": (lambda s, t, y, **r: thresholded_pseudo_label_loss(s, t, 0.4, **r),
                    lambda s, t, y: _old_thresholded(s, t, 0.4)),
    "forward_corrected": (lambda s, t, y, **r: forward_corrected_loss(s, y, TRANSITION, **r),
                          lambda s, t, y: _old_forward_corrected(s, y, TRANSITION)),
    "forward_corrected_dist": (
        lambda s, t, y, **r: forward_corrected_loss(s, _soft(t, r.get("dim")), TRANSITION, **r),
        lambda s, t, y: _old_forward_corrected(s, F.softmax(t, dim=1), TRANSITION)),
    "slam": (lambda s, t, y, **r: slam_loss(s, t, _alpha(y), 2, True, "soft_topk", **r),
             lambda s, t, y: _old_slam(s, t, _alpha(y), 2, True, "soft_topk")),
    "slam_floor": (lambda s, t, y, **r: slam_loss(s, t, _alpha(y), 3, False, "hard", 0.5, **r),
                   lambda s, t, y: _old_slam(s, t, _alpha(y).clamp_min(0.5), 3, False, "hard")),
    "prokt_teacher": (lambda s, t, y, **r: prokt_teacher_loss(t, s, y, 0.5, 2.0, **r),
                      lambda s, t, y: _old_prokt(t, s, y, 0.5, 2.0)),
    "forward_kl": (lambda s, t, y, **r: forward_kl_loss(s, t, 1.5, **r), None),
    "reverse_kl": (lambda s, t, y, **r: reverse_kl_loss(s, t, 1.5, **r), None),
    "gjsd": (lambda s, t, y, **r: generalized_jsd_loss(s, t, 0.3, 2.0, **r), None),
}
# The prokt teacher loss is differentiated in its first argument, the teacher; the others in the student.
GRAD_OF_TEACHER = {"prokt_teacher"}


def _data(seed: int, shape: tuple[int, ...] = (2, 3, V), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=dtype) * 2
    t = torch.randn(*shape, generator=g, dtype=dtype) * 2
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return s, t, y


def _value_and_grad(name: str, s, t, y, **rule):
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    value = LOSSES[name][0](s, t, y, **rule)
    value.sum().backward()
    return value.detach(), (t if name in GRAD_OF_TEACHER else s).grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", [n for n, (_, old) in LOSSES.items() if old is not None])
def test_rank_2_is_bit_for_bit_the_old_implementation(name: str, dtype: torch.dtype) -> None:
    s, t, y = _data(0, (7, V), dtype)
    new, new_grad = _value_and_grad(name, s, t, y)
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    old = LOSSES[name][1](s2, t2, y)
    old.sum().backward()
    assert torch.equal(new, old.detach())
    assert torch.equal(new_grad, (t2 if name in GRAD_OF_TEACHER else s2).grad)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tokens_equal_the_rank_2_loss_on_flattened_positions(name: str, reduction: str) -> None:
    s, t, y = _data(1)
    f = LOSSES[name][0]
    flat = f(s.reshape(-1, V), t.reshape(-1, V), y.reshape(-1), reduction=reduction)
    ours = f(s, t, y, reduction=reduction)
    assert ours.shape == ((2, 3) if reduction == "none" else ())
    assert torch.allclose(ours.reshape(flat.shape), flat, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(LOSSES))
def test_dim_names_the_class_dim_of_another_layout(name: str) -> None:
    s, t, y = _data(2)
    f = LOSSES[name][0]
    for reduction in ("mean", "none"):
        moved = f(s.movedim(-1, 1), t.movedim(-1, 1), y, dim=1, reduction=reduction)
        assert torch.allclose(moved, f(s, t, y, reduction=reduction), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(LOSSES))
def test_mask_equals_the_loss_on_the_kept_rows_and_ignores_what_padding_holds(name: str) -> None:
    s, t, y = _data(3)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    kept, kept_grad = _value_and_grad(name, s[mask], t[mask], y[mask], reduction="mean")
    s_pad, t_pad = s.clone(), t.clone()
    s_pad[~mask], t_pad[~mask] = float("nan"), float("inf")  # what padding holds must not matter
    ours, grad = _value_and_grad(name, s_pad, t_pad, y, mask=mask, reduction="mean")
    assert torch.allclose(ours, kept, rtol=1e-12, atol=1e-14)
    assert torch.allclose(grad[mask], kept_grad, rtol=1e-10, atol=1e-13)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))


@pytest.mark.parametrize("name", list(LOSSES))
def test_reductions_relate(name: str) -> None:
    s, t, y = _data(4)
    f = LOSSES[name][0]
    mask = torch.tensor([[True, False, True], [True, True, False]])
    per = f(s, t, y, mask=mask, reduction="none")
    assert per.shape == mask.shape and torch.equal(per[~mask], torch.zeros(2, dtype=per.dtype))
    assert torch.allclose(per[mask], f(s[mask], t[mask], y[mask], reduction="none"), rtol=1e-12, atol=1e-14)
    total = f(s, t, y, mask=mask, reduction="sum")
    assert torch.allclose(total, per.sum(), rtol=1e-12)
    assert torch.allclose(f(s, t, y, mask=mask, reduction="mean"), total / mask.sum(), rtol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_all_false_mask_gives_zero_with_a_zero_gradient(name: str) -> None:
    s, t, y = _data(5)
    none = torch.zeros(2, 3, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        value, grad = _value_and_grad(name, s, t, y, mask=none, reduction=reduction)
        assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_kd_hand_values_on_a_tiny_token_batch() -> None:
    # [2, 3, 4] logits; per token KL(p_t || p_s) at T = 2 from the definition in plain Python, times T^2, mean of 6.
    s, t, _ = _data(6)
    T, total = 2.0, 0.0
    for b in range(2):
        for i in range(3):
            zs, zt = [float(v) / T for v in s[b, i]], [float(v) / T for v in t[b, i]]
            ns, nt = sum(math.exp(v) for v in zs), sum(math.exp(v) for v in zt)
            total += sum(math.exp(a) / nt * ((a - math.log(nt)) - (c - math.log(ns))) for a, c in zip(zt, zs))
    assert math.isclose(kd_loss(s, t, T).item(), T**2 * total / 6, rel_tol=1e-12)
    # The old rule (classes on dim 1, here the 3 sequence positions) gives another number: the issue's bug.
    assert not math.isclose(kd_loss(s.transpose(1, 2), t.transpose(1, 2), T, dim=1).item(),
                            kd_loss(s, t, T, dim=1).item(), rel_tol=1e-3)


def test_the_issue_example_is_per_token_kd() -> None:
    # Issue 24: random [2, 5, 10] logits (torch.manual_seed(0), T = 2) gave 0.663 with classes on dim 1.
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 10), torch.randn(2, 5, 10)
    p_t, log_p_s = F.softmax(t.reshape(10, 10) / 2, dim=1), F.log_softmax(s.reshape(10, 10) / 2, dim=1)
    per_token = (p_t * (p_t.log() - log_p_s)).sum(1)
    assert math.isclose(kd_loss(s, t, 2.0).item(), 4 * per_token.mean().item(), rel_tol=1e-6)
    assert math.isclose(kd_loss(s, t, 2.0).item(), 0.8695, abs_tol=5e-4)
    assert math.isclose(kd_loss(s, t, 2.0, dim=1).item(), 0.6628, abs_tol=5e-4)  # the old number: dim 1 on purpose


def test_hard_cross_entropy_keeps_f_cross_entropy_semantics_with_dim_1_and_ignore_index() -> None:
    g = torch.Generator().manual_seed(7)
    z, y = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), torch.randint(0, 4, (2, 3, 3), generator=g)
    assert torch.allclose(hard_cross_entropy(z, y, dim=1), F.cross_entropy(z, y))
    y[0, 0, 0] = -100
    assert torch.allclose(hard_cross_entropy(z, y, dim=1), F.cross_entropy(z, y))


def test_bad_masks_shapes_and_reductions_are_refused_with_the_loss_named() -> None:
    s, t, y = _data(8)
    with pytest.raises(ValueError, match=r"kd_loss: mask must be bool of the positions' shape \(2, 3\)"):
        kd_loss(s, t, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="kd_loss: mask must be bool"):
        kd_loss(s, t, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"wsl_loss: expected a tensor of the logits' shape \(2, 3, 4\)"):
        wsl_loss(s, t[..., :3], y)
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        kd_loss(s, t, reduction="batchmean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim=3 is outside"):
        kd_loss(s, t, dim=3)
    with pytest.raises(ValueError, match=r"dkd_loss needs int64 class indices of the positions' shape \(2, 3\)"):
        dkd_loss(s, t, y.reshape(-1))


def test_positions_rows_values_and_none_round_trip() -> None:
    x = torch.arange(24.0).reshape(2, 4, 3)  # classes on dim 1: positions [2, 3]
    mask = torch.tensor([[True, False, True], [False, True, True]])
    pos = Positions(x, dim=1, mask=mask)
    assert pos.shape == (2, 3)
    assert torch.equal(pos.rows(x), x.movedim(1, -1)[mask])
    assert torch.equal(pos.values(mask.float()), torch.ones(4))
    back = pos.reduce(torch.tensor([1.0, 2.0, 3.0, 4.0]), "none")
    assert torch.equal(back, torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 4.0]]))
