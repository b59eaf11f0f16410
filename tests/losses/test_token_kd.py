"""Token-level KD of language models: forward KL, reverse KL (MiniLLM) and GKD's generalized JSD against hand
values, their limits, gradients, a port of TRL's `generalized_jsd_loss`, temperature and masking of padded tokens."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import forward_kl_loss, generalized_jsd_loss, kd_loss, reverse_kl_loss


def _logits(seed: int, shape: tuple[int, ...] = (2, 3, 4), scale: float = 2.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _probs(z: torch.Tensor) -> list[list[list[float]]]:
    """softmax over the last dim in plain Python, independent of torch's kernels."""
    out = []
    for seq in z.tolist():
        out.append([[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in seq])
    return out


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _hand(s: torch.Tensor, t: torch.Tensor, divergence) -> float:
    ps, pt = _probs(s), _probs(t)
    values = [divergence(pt[b][i], ps[b][i]) for b in range(len(ps)) for i in range(len(ps[0]))]
    return sum(values) / len(values)


def _gjsd(beta: float):
    def divergence(p_t: list[float], p_s: list[float]) -> float:
        m = [beta * a + (1 - beta) * b for a, b in zip(p_t, p_s)]
        return beta * _kl(p_t, m) + (1 - beta) * _kl(p_s, m)
    return divergence


def test_two_class_closed_forms() -> None:
    # p_T = [1/2, 1/2], p_S = [1/4, 3/4]; at beta = 1/2, m = [3/8, 5/8].
    t = torch.zeros(1, 1, 2, dtype=torch.float64)
    s = torch.tensor([[[0.0, math.log(3.0)]]], dtype=torch.float64)
    assert math.isclose(forward_kl_loss(s, t).item(), 0.5 * math.log(4 / 3), rel_tol=1e-12)
    assert math.isclose(reverse_kl_loss(s, t).item(), 0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel_tol=1e-12)
    jsd = (0.5 * (0.5 * math.log(4 / 3) + 0.5 * math.log(4 / 5))
           + 0.5 * (0.25 * math.log(2 / 3) + 0.75 * math.log(6 / 5)))
    assert math.isclose(generalized_jsd_loss(s, t, 0.5).item(), jsd, rel_tol=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_hand_values_on_a_tiny_token_batch(beta: float) -> None:
    s, t = _logits(0), _logits(1)
    assert math.isclose(forward_kl_loss(s, t).item(), _hand(s, t, _kl), rel_tol=1e-12)
    assert math.isclose(reverse_kl_loss(s, t).item(), _hand(s, t, lambda pt, ps: _kl(ps, pt)), rel_tol=1e-12)
    assert math.isclose(generalized_jsd_loss(s, t, beta).item(), _hand(s, t, _gjsd(beta)), rel_tol=1e-12)


def test_equal_distributions_give_zero_for_every_divergence() -> None:
    z = _logits(2)
    shifted = z + 3.7  # same softmax
    for beta in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert generalized_jsd_loss(z, shifted, beta).abs() < 1e-14
    assert forward_kl_loss(z, shifted).abs() < 1e-14 and reverse_kl_loss(z, shifted).abs() < 1e-14


def test_beta_limits_and_endpoints() -> None:
    s, t = _logits(3), _logits(4)
    fkl, rkl = forward_kl_loss(s, t), reverse_kl_loss(s, t)
    eps = 1e-6
    # JSD(beta) -> 0 at both ends; divided by beta (resp. 1 - beta) it tends to the forward (resp. reverse) KL.
    assert generalized_jsd_loss(s, t, eps) < 1e-5 and generalized_jsd_loss(s, t, 1 - eps) < 1e-5
    assert torch.isclose(generalized_jsd_loss(s, t, eps) / eps, fkl, rtol=1e-4)
    assert torch.isclose(generalized_jsd_loss(s, t, 1 - eps) / eps, rkl, rtol=1e-4)
    # The endpoints are those limits (TRL's convention), not the formula's 0: the value jumps there.
    assert torch.equal(generalized_jsd_loss(s, t, 0.0), fkl) and torch.equal(generalized_jsd_loss(s, t, 1.0), rkl)


def test_swapping_student_and_teacher_maps_beta_to_one_minus_beta_and_half_is_the_jsd() -> None:
    s, t = _logits(5), _logits(6)
    for beta in (0.2, 0.5, 0.7):
        assert torch.isclose(generalized_jsd_loss(s, t, beta), generalized_jsd_loss(t, s, 1 - beta), rtol=1e-12)
    p, q = F.softmax(t, -1), F.softmax(s, -1)
    m = (p + q) / 2
    jsd = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    assert torch.isclose(generalized_jsd_loss(s, t, 0.5), jsd.mean(), rtol=1e-12)
    assert (jsd <= math.log(2)).all()


def _trl_generalized_jsd(student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0):
    """Port of huggingface/trl@f2cd577 trl/experimental/gkd/gkd_trainer.py GKDTrainer.generalized_jsd_loss
    (L239-323) with reduction="batchmean": the same steps in the same order, rewritten here."""
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(log_s, log_t, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(log_t, log_s, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=log_s.dtype)
        log_mix = torch.logsumexp(torch.stack([log_s + torch.log1p(-b), log_t + torch.log(b)]), dim=0)
        jsd = (b * F.kl_div(log_mix, log_t, reduction="none", log_target=True)
               + (1 - b) * F.kl_div(log_mix, log_s, reduction="none", log_target=True))
    if labels is None:
        return jsd.sum() / max(jsd.size(0), 1)  # TRL without labels: the sum over tokens / batch size
    mask = labels != -100
    return jsd[mask].sum() / mask.sum().clamp_min(1)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_trl_generalized_jsd_loss(beta: float, temperature: float) -> None:
    s, t = _logits(7, (3, 5, 6)), _logits(8, (3, 5, 6))
    labels = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(9))
    labels[0, :2], labels[2, 4] = -100, -100  # prompt and padding
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    ours = generalized_jsd_loss(s1, t, beta, temperature, mask=labels != -100)
    ref = _trl_generalized_jsd(s2, t, labels, beta, temperature)
    assert torch.isclose(ours, ref, rtol=1e-12)
    ours.backward()
    ref.backward()
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-10, atol=1e-14)
    # Without labels TRL divides by the batch size: our sum over tokens / B.
    sum_over_batch = generalized_jsd_loss(s, t, beta, temperature, reduction="sum") / 3
    assert torch.isclose(sum_over_batch, _trl_generalized_jsd(s, t, None, beta, temperature), rtol=1e-12)


def test_gradients_match_the_closed_forms() -> None:
    s, t, T = _logits(10).requires_grad_(), _logits(11), 1.7
    mask = torch.tensor([[True, True, False], [True, False, True]])
    n = mask.sum()
    p_s, p_t = F.softmax(s.detach() / T, -1), F.softmax(t / T, -1)
    forward_kl_loss(s, t, T, mask=mask).backward()
    # d/ds KL(p_T || p_S) = (p_S - p_T) / T per kept token, / n for the mean.
    assert torch.allclose(s.grad, (p_s - p_t) / T / n * mask.unsqueeze(-1), atol=1e-14)
    s.grad = None
    reverse_kl_loss(s, t, T, mask=mask).backward()
    # d/ds KL(p_S || p_T) = p_S * (log p_S - log p_T - KL) / T.
    log_ratio = p_s.log() - p_t.log()
    kl = (p_s * log_ratio).sum(-1, keepdim=True)
    assert torch.allclose(s.grad, p_s * (log_ratio - kl) / T / n * mask.unsqueeze(-1), atol=1e-14)


def test_gradcheck_float64_in_both_arguments() -> None:
    s = _logits(12, (2, 2, 3)).requires_grad_()
    t = _logits(13, (2, 2, 3)).requires_grad_()
    mask = torch.tensor([[True, False], [True, True]])
    assert torch.autograd.gradcheck(lambda a, b: forward_kl_loss(a, b, 1.5, mask=mask), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: reverse_kl_loss(a, b, 1.5, mask=mask), (s, t))
    for beta in (0.1, 0.5, 0.9):
        assert torch.autograd.gradcheck(lambda a, b: generalized_jsd_loss(a, b, beta, 1.5, mask=mask), (s, t))


def test_temperature_divides_both_logits_and_forward_kl_times_t_squared_is_kd() -> None:
    s, t = _logits(14), _logits(15)
    for T in (0.5, 2.0, 4.0):
        assert torch.isclose(forward_kl_loss(s, t, T), forward_kl_loss(s / T, t / T), rtol=1e-12)
        assert torch.isclose(reverse_kl_loss(s, t, T), reverse_kl_loss(s / T, t / T), rtol=1e-12)
        assert torch.isclose(generalized_jsd_loss(s, t, 0.4, T), generalized_jsd_loss(s / T, t / T, 0.4), rtol=1e-12)
        assert torch.isclose(forward_kl_loss(s, t, T) * T**2, kd_loss(s, t, T), rtol=1e-12)


def test_mask_excludes_padded_tokens() -> None:
    s, t = _logits(16, (2, 4, 5)), _logits(17, (2, 4, 5))
    lengths = torch.tensor([4, 2])
    mask = torch.arange(4) < lengths.unsqueeze(1)  # right padding
    noisy_s, noisy_t = s.clone(), t.clone()
    noisy_s[~mask], noisy_t[~mask] = 1e4, -1e4  # anything in the padding
    for loss in (forward_kl_loss, reverse_kl_loss, lambda a, b, **k: generalized_jsd_loss(a, b, 0.3, **k)):
        kept = loss(s[mask], t[mask])
        assert torch.isclose(loss(noisy_s, noisy_t, mask=mask), kept, rtol=1e-12)
        per_token = loss(s, t, reduction="none")
        assert torch.isclose(kept, per_token[mask].mean(), rtol=1e-12)  # mean over the 6 real tokens, not 8


def test_bad_inputs_are_refused() -> None:
    s, t = _logits(18), _logits(19, (2, 3, 5))
    with pytest.raises(ValueError, match=r"forward_kl_loss: expected a tensor of the logits' shape \(2, 3, 4\)"):
        forward_kl_loss(s, t)  # a teacher with another vocabulary
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        generalized_jsd_loss(s, s, 1.5)
