"""KD-Zero's operations: hand-computed values, limit cases, the known losses they recompose, gradcheck."""
import math

import pytest
import torch

from kdforge.losses import kd_loss
from kdforge.losses import kdzero as ops
from kdforge.losses.at import at_loss
from kdforge.losses.sp import similarity_matrix


def _pair(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_softmax_then_kl_times_t_squared_is_hinton_kd():
    s, t = _pair(8, 10)
    composed = 16.0 * ops.kl_distance(ops.softmax_t(s, 4.0), ops.softmax_t(t, 4.0))
    assert torch.allclose(composed, kd_loss(s, t, 4.0), atol=1e-6)


def test_kl_hand_computed_and_zero_on_itself():
    s, t = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert ops.kl_distance(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert ops.kl_distance(t, t).item() == pytest.approx(0.0, abs=1e-7)
    # rows are renormalised: a scaled distribution is the same distribution
    assert ops.kl_distance(3 * s, t).item() == pytest.approx(expected, rel=1e-6)


def test_pointwise_distances_hand_computed():
    s, t = torch.tensor([[0.0, 2.0], [1.0, -1.0]]), torch.zeros(2, 2)
    assert ops.l1_distance(s, t).item() == pytest.approx(1.0)
    assert ops.l2_distance(s, t).item() == pytest.approx(6.0 / 4)
    # smooth-L1 (beta 1): 0.5 x^2 below 1, |x| - 0.5 above: (0 + 1.5 + 0.5 + 0.5) / 4
    assert ops.smooth_l1_distance(s, t).item() == pytest.approx(2.5 / 4)


def test_cosine_and_pearson_limits():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert ops.cosine_distance(a, 2 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert ops.cosine_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)
    assert ops.pearson_distance(a, 2 * a + 3).item() == pytest.approx(0.0, abs=1e-6)  # invariant to shift and scale
    assert ops.pearson_distance(a, -a).item() == pytest.approx(2.0, abs=1e-6)  # perfectly anti-correlated
    # cosine is not shift-invariant: that is what makes Pearson differ from it
    assert ops.cosine_distance(a, a + 10).item() > 1e-3


def test_mask_target_drops_the_target_column_in_order():
    x = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    assert torch.equal(ops.mask_target(x, torch.tensor([1, 0])), torch.tensor([[0.0, 2.0], [4.0, 5.0]]))
    soft = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]])  # mixed labels: the largest class is masked
    assert torch.equal(ops.mask_target(x, soft), torch.tensor([[0.0, 2.0], [4.0, 5.0]]))
    with pytest.raises(ValueError, match="needs logits"):
        ops.mask_target(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))


def test_attention_l2norm_l2_is_attention_transfer():
    s, t = torch.randn(4, 8, 5, 5), torch.randn(4, 32, 5, 5)
    composed = ops.l2_distance(ops.l2_normalize(ops.attention_map(s)), ops.l2_normalize(ops.attention_map(t)))
    assert torch.allclose(composed, at_loss(s, t, 2), atol=1e-7)


def test_batch_relation_is_sp_similarity():
    x = torch.randn(6, 4, 3, 3)
    assert torch.allclose(ops.batch_relation(x), similarity_matrix(x), atol=1e-6)


def test_gram_hand_computed():
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # B=1, C=2, H=1, W=2
    expected = torch.tensor([[[5.0, 3.0], [3.0, 9.0]]]) / 2
    assert torch.allclose(ops.gram_matrix(x), expected)


def test_normalisations():
    x = torch.randn(16, 5) * 3 + 7
    b = ops.batch_standardize(x)
    assert torch.allclose(b.mean(0), torch.zeros(5), atol=1e-5) and torch.allclose(b.std(0, unbiased=False),
                                                                                  torch.ones(5), atol=1e-4)
    z = ops.sample_standardize(x)
    assert torch.allclose(z.mean(1), torch.zeros(16), atol=1e-5)
    assert torch.allclose(ops.l2_normalize(x).norm(dim=1), torch.ones(16), atol=1e-6)
    assert torch.allclose(ops.channel_relation(torch.stack([x[:, 0], 2 * x[:, 0]], 1)), torch.ones(2, 2), atol=1e-4)
    assert ops.global_pool(torch.ones(2, 3, 4, 4)).shape == (2, 3)


def test_shapes_that_do_not_fit_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        ops.l2_distance(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="needs feature maps"):
        ops.attention_map(torch.zeros(2, 3))


@pytest.mark.parametrize("distance", [ops.kl_distance, ops.pearson_distance, ops.cosine_distance,
                                      ops.smooth_l1_distance])
def test_gradcheck_of_composed_distances(distance):
    s, t = _pair(3, 5, seed=1)
    s = s.double().requires_grad_()
    t = t.double()
    fn = lambda a: distance(ops.softmax_t(a, 2.0), ops.softmax_t(t, 2.0))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (s,))
