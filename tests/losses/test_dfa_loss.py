"""aggregate_features (DFA's DARTS-style mixing of teacher maps): limit cases, a hand value, the softmax gradient
of the architecture parameters, pooling of larger maps, and refusals."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import aggregate_features


def test_uniform_weights_average_and_one_hot_selects():
    a, b, c = (torch.randn(2, 3, 4, 4) for _ in range(3))
    assert torch.allclose(aggregate_features([a, b, c], torch.full((3,), 1 / 3)), (a + b + c) / 3)
    assert torch.equal(aggregate_features([a, b, c], torch.tensor([0.0, 1.0, 0.0])), b)


def test_hand_value_with_a_larger_map_pooled_to_the_stage_output():
    big = torch.arange(16.0).reshape(1, 1, 4, 4)  # 2x2 average pool: [[2.5, 4.5], [10.5, 12.5]]
    out = torch.ones(1, 1, 2, 2)
    agg = aggregate_features([big, out], torch.tensor([0.25, 0.75]))
    assert torch.allclose(agg, torch.tensor([[[[0.25 * 2.5 + 0.75, 0.25 * 4.5 + 0.75],
                                               [0.25 * 10.5 + 0.75, 0.25 * 12.5 + 0.75]]]]))


def test_gradient_in_alpha_is_the_softmax_jacobian():
    # d<G, sum_i softmax(a)_i F_i>/da_j = p_j (<G, F_j> - <G, A>)
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 4, 4, dtype=torch.float64) for _ in range(3)]
    g = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    alpha = torch.randn(3, dtype=torch.float64, requires_grad=True)
    agg = aggregate_features(feats, alpha.softmax(0))
    (agg * g).sum().backward()
    p = alpha.detach().softmax(0)
    inner = torch.stack([(g * f).sum() for f in feats])
    assert torch.allclose(alpha.grad, p * (inner - (g * agg.detach()).sum()))
    assert torch.autograd.gradcheck(lambda a: aggregate_features(feats, F.softmax(a, 0)),
                                    (alpha.detach().requires_grad_(),))


def test_refuses_mismatched_weights_channels_and_smaller_maps():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="2 candidate"):
        aggregate_features([x, x], torch.ones(3))
    with pytest.raises(ValueError, match="batch and channels must match"):
        aggregate_features([torch.zeros(2, 5, 4, 4), x], torch.ones(2))
    with pytest.raises(ValueError, match="smaller than the stage output"):
        aggregate_features([torch.zeros(2, 3, 2, 2), x], torch.ones(2))
