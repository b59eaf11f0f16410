"""Meta-gradients through unrolled steps, against closed forms, a hand derivation and finite differences."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.meta import meta_gradient, unroll


class Scalar(nn.Module):
    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.w


@pytest.mark.parametrize("steps", [1, 2, 5, 15])
def test_quadratic_meta_gradient_matches_the_closed_form_and_finite_differences(steps):
    # Inner: L(w; phi) = a/2 (w - phi)^2, SGD with rate r: w_K = q^K w0 + (1 - q^K) phi with q = 1 - r a.
    # Outer: (w_K - c)^2, so d/dphi = 2 (w_K - c) (1 - q^K).
    a, r, w0, c = 3.0, 0.1, 2.0, -1.0
    phi = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    model, dummy = Scalar(w0), torch.zeros(())
    inner = lambda f, k: 0.5 * a * (f(dummy) - phi) ** 2  # noqa: E731
    outer = lambda f: (f(dummy) - c) ** 2  # noqa: E731
    (grad,), value, result = meta_gradient(model, inner, outer, [phi], steps, r)
    q = 1 - r * a
    w_k = q**steps * w0 + (1 - q**steps) * 0.5
    assert result.params["w"].item() == pytest.approx(w_k, rel=1e-12)
    assert grad.item() == pytest.approx(2 * (w_k - c) * (1 - q**steps), rel=1e-12)

    def outer_at(p: float) -> float:
        phi_p = torch.tensor(p, dtype=torch.float64)
        res = unroll(model, lambda f, k: 0.5 * a * (f(dummy) - phi_p) ** 2, steps, r, create_graph=False)
        return outer(res.forward).item()

    eps = 1e-6
    assert grad.item() == pytest.approx((outer_at(0.5 + eps) - outer_at(0.5 - eps)) / (2 * eps), rel=1e-6)
    assert model.w.item() == w0  # the module itself is untouched


def test_one_step_matches_the_hand_derivation_for_sample_weights():
    # One step of weighted least squares: w1 = w0 - r * X^T diag(phi) (X w0 - y) / n; the meta-gradient of a
    # validation loss V(w1) with respect to the weights phi is, by the chain rule,
    # dV/dphi_i = -r/n * (x_i . grad V(w1)) * (x_i . w0 - y_i).
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    xv, yv = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    w0 = model.weight.detach().clone().view(-1)
    phi = torch.rand(6, generator=g, dtype=torch.float64).requires_grad_()
    r = 0.3
    inner = lambda f, k: 0.5 * (phi * (f(x).view(-1) - y) ** 2).mean()  # noqa: E731
    outer = lambda f: 0.5 * ((f(xv).view(-1) - yv) ** 2).mean()  # noqa: E731
    (grad,), _, result = meta_gradient(model, inner, outer, [phi], 1, r)
    w1 = w0 - r * (x.T @ (phi.detach() * (x @ w0 - y))) / 6
    assert torch.allclose(result.params["weight"].view(-1), w1, rtol=1e-12)
    grad_v = xv.T @ (xv @ w1 - yv) / 4
    expected = -r / 6 * (x @ grad_v) * (x @ w0 - y)
    assert torch.allclose(grad, expected, rtol=1e-10)


def test_a_network_with_batchnorm_against_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(3, (16,))
    xv, yv = torch.randn(8, 5, dtype=torch.float64), torch.randint(3, (8,))
    temp = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)  # a learned temperature of the inner CE
    inner = lambda f, k: F.cross_entropy(f(x) / temp, y)  # noqa: E731
    outer = lambda f: F.cross_entropy(f(xv), yv)  # noqa: E731
    running = model[1].running_mean.clone()
    (grad,), _, _ = meta_gradient(model, inner, outer, [temp], 3, 0.5)
    assert torch.equal(model[1].running_mean, running)  # statistics moved only in the unrolled copy

    def outer_at(t: float) -> float:
        tt = torch.tensor(t, dtype=torch.float64)
        res = unroll(model, lambda f, k: F.cross_entropy(f(x) / tt, y), 3, 0.5)
        return outer(res.forward).item()

    eps = 1e-6
    assert grad.item() == pytest.approx((outer_at(2 + eps) - outer_at(2 - eps)) / (2 * eps), rel=1e-5)


def test_commit_writes_the_steps_into_the_module_and_bad_arguments_fail():
    model = Scalar(1.0)
    res = unroll(model, lambda f, k: f(torch.zeros(())) ** 2, 2, 0.25)  # w <- w - 0.25 * 2w = w / 2, twice
    res.commit()
    assert model.w.item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one step"):
        unroll(model, lambda f, k: f(torch.zeros(())), 0, 0.1)
    with pytest.raises(ValueError, match="2 learning rates for 3 steps"):
        unroll(model, lambda f, k: f(torch.zeros(())), 3, [0.1, 0.2])
