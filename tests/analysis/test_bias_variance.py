"""Bias-variance decompositions (Yang et al., ICML 2020): the identity risk = bias + variance on synthetic
ensembles, limit cases, and hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from kdforge.analysis.bias_variance import ce_decomposition, mse_decomposition


def _ensemble(seed: int, m: int = 5, n: int = 40, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, n, c, generator=g, dtype=torch.float64) * 3
    return logits, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ce_identity_risk_is_bias_plus_variance(seed: int) -> None:
    logits, y = _ensemble(seed)
    dec = ce_decomposition(logits.log_softmax(-1), y)
    risk = torch.nn.functional.cross_entropy(logits.reshape(-1, 4), y.repeat(5), reduction="none").view(5, -1).mean(0)
    torch.testing.assert_close(dec.risk, risk)
    torch.testing.assert_close(dec.bias + dec.variance, dec.risk)
    assert (dec.variance >= -1e-12).all()  # geometric mean <= arithmetic mean


def test_ce_variance_is_mean_kl_to_the_normalized_geometric_mean() -> None:
    logits, y = _ensemble(3, m=3, n=6)
    logp = logits.log_softmax(-1)
    geo = logp.mean(0).exp()
    pi_bar = geo / geo.sum(-1, keepdim=True)
    kl = torch.stack([(pi_bar * (pi_bar.log() - logp[j])).sum(-1) for j in range(3)]).mean(0)
    dec = ce_decomposition(logp, y)
    torch.testing.assert_close(dec.variance, kl)
    torch.testing.assert_close(dec.bias, -pi_bar.log().gather(1, y[:, None]).squeeze(1))
    torch.testing.assert_close(dec.variance, -geo.sum(-1).log())  # = -log Z


def test_ce_identical_members_have_no_variance() -> None:
    logits, y = _ensemble(4, m=1)
    dec = ce_decomposition(logits.expand(6, -1, -1).log_softmax(-1), y)
    torch.testing.assert_close(dec.variance, torch.zeros_like(dec.variance))
    torch.testing.assert_close(dec.bias, dec.risk)


def test_ce_hand_value_two_members_two_classes() -> None:
    # members p1 = (0.8, 0.2), p2 = (0.2, 0.8), label 0: geometric mean (0.4, 0.4) -> pi_bar = (0.5, 0.5)
    logp = torch.tensor([[[0.8, 0.2]], [[0.2, 0.8]]], dtype=torch.float64).log()
    dec = ce_decomposition(logp, torch.tensor([0]))
    assert dec.bias.item() == pytest.approx(math.log(2))
    assert dec.variance.item() == pytest.approx(-math.log(0.8))  # -log Z, Z = 0.4 + 0.4
    assert dec.risk.item() == pytest.approx(-(math.log(0.8) + math.log(0.2)) / 2)


def test_mse_identity_and_hand_value() -> None:
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    dec = mse_decomposition(probs, torch.tensor([0]), unbiased=False)
    # mean prediction (0.5, 0.5): ||p_bar - y||^2 = 0.5, variance mean_j ||p_j - p_bar||^2 = 0.5, risk = 1
    assert dec.bias.item() == pytest.approx(0.5) and dec.variance.item() == pytest.approx(0.5)
    assert dec.risk.item() == pytest.approx(1.0)
    logits, y = _ensemble(5)
    d2 = mse_decomposition(logits.softmax(-1), y, unbiased=True)
    torch.testing.assert_close(d2.bias + d2.variance, d2.risk)
    d1 = mse_decomposition(logits.softmax(-1), y, unbiased=False)
    torch.testing.assert_close(d2.variance, d1.variance * 5 / 4)


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match="models, samples, classes"):
        ce_decomposition(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))


def test_jackknife_se_hand_values() -> None:
    from kdforge.analysis.bias_variance import jackknife_se, paired_jackknife_se

    # theta_(i) = 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9, times (M-1)/M = 2/3
    assert jackknife_se([1.0, 2.0, 4.0]) == pytest.approx(math.sqrt(28 / 9))
    # paired: the differences 1, 0, 3 have the same spread; a shift common to both ensembles cancels
    assert paired_jackknife_se([1.0, 2.0, 4.0], [2.0, 2.0, 7.0]) == pytest.approx(math.sqrt(28 / 9))
    assert paired_jackknife_se([1.0, 2.0, 4.0], [11.0, 12.0, 14.0]) == pytest.approx(0.0)
    assert math.isnan(jackknife_se([3.0]))
    with pytest.raises(ValueError, match="same members"):
        paired_jackknife_se([1.0, 2.0], [1.0, 2.0, 3.0])


def test_jackknife_of_a_mean_is_its_standard_error() -> None:
    from kdforge.analysis.bias_variance import jackknife_se

    x = torch.randn(7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loo = [(float(x.sum()) - float(v)) / 6 for v in x]
    assert jackknife_se(loo) == pytest.approx(float(x.std()) / math.sqrt(7))


def test_leave_one_out_hand_values_three_members_one_sample() -> None:
    from kdforge.analysis.bias_variance import jackknife_se, leave_one_out

    # two classes, label 0; the members give class 0 the probabilities 0.5, 0.8, 0.2
    p = torch.tensor([0.5, 0.8, 0.2], dtype=torch.float64)
    log_probs = torch.stack([p, 1 - p], -1).log()[:, None, :]
    loo = leave_one_out(log_probs, torch.tensor([0]))
    # without member 1: {0.8, 0.2}, geometric means 0.4 and 0.4, pi_bar = 1/2, Z = 0.8
    # without member 2: {0.5, 0.2}, pi_bar_0 = sqrt(.1) / (sqrt(.1) + sqrt(.4)) = 1/3
    # without member 3: {0.5, 0.8}, pi_bar_0 = 2/3; Z = sqrt(.1) + sqrt(.4) in both
    bias = [math.log(2), math.log(3), math.log(1.5)]
    z = math.sqrt(0.1) + math.sqrt(0.4)
    assert loo["bias"] == pytest.approx(bias)
    assert loo["variance"] == pytest.approx([-math.log(0.8), -math.log(z), -math.log(z)])
    assert loo["risk"] == pytest.approx([-(math.log(0.8) + math.log(0.2)) / 2, -(math.log(0.5) + math.log(0.2)) / 2,
                                         -(math.log(0.5) + math.log(0.8)) / 2])
    mean = sum(bias) / 3
    assert jackknife_se(loo["bias"]) == pytest.approx(math.sqrt(2 / 3 * sum((b - mean) ** 2 for b in bias)))
    with pytest.raises(ValueError, match="at least 3"):
        leave_one_out(log_probs[:2], torch.tensor([0]))
