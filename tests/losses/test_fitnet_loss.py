"""hint_loss (FitNets Eq. 3 as RepDistiller computes it): hand value, gradient, refusal of unmatched shapes."""
import pytest
import torch

from kdforge.losses import hint_loss


def test_hand_value_is_the_mean_squared_difference():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 7.0]])
    assert hint_loss(s, t).item() == pytest.approx((1 + 0 + 4 + 9) / 4)


def test_zero_at_equality_and_gradient_is_2_diff_over_n():
    s = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    assert hint_loss(t, t).item() == 0.0
    hint_loss(s, t).backward()
    assert torch.allclose(s.grad, 2 * (s - t).detach() / s.numel())
    assert torch.autograd.gradcheck(lambda a: hint_loss(a, t), (s.detach().requires_grad_(),))


def test_shapes_must_match():
    with pytest.raises(ValueError, match="regress the student's feature first"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))
