"""Gradient variance under KD (Safaryan et al., NeurIPS 2023): the measured curve, its control-variate optimum,
and the closed form of the linear experiment against Monte-Carlo."""
from __future__ import annotations

import pytest
import torch

from kdforge.analysis.grad_variance import (
    LinearProblem, linear_measured_curve, linear_regression_variance, sgd_checkpoints, variance_curve,
)

LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]


def test_curve_is_measured_and_its_minimum_is_the_control_variate_optimum() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 7, generator=g, dtype=torch.float64)
    d = -0.6 * a + 0.3 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    curve = variance_curve(a, d, [i / 100 for i in range(201)])
    best = curve.lambdas[min(range(len(curve.variance)), key=curve.variance.__getitem__)]
    assert best == pytest.approx(curve.lam_star, abs=0.01)
    assert min(curve.variance) == pytest.approx(curve.floor, rel=1e-3)
    # at lam = 0 it is the variance of the hard-label gradients alone, computed by hand
    assert curve.variance[0] == pytest.approx(float(((a - a.mean(0)) ** 2).sum(1).mean()))


def test_perfect_control_variate_removes_all_variance() -> None:
    a = torch.randn(30, 5, dtype=torch.float64)
    curve = variance_curve(a, -a, LAMBDAS)  # KD gradient == 0 on every batch: lam = 1 cancels everything
    assert curve.lam_star == pytest.approx(1.0)
    assert curve.floor == pytest.approx(0.0, abs=1e-12) and curve.variance[-1] == pytest.approx(0.0, abs=1e-12)


def test_closed_form_limits() -> None:
    u = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    perfect = linear_regression_variance(u, torch.zeros(3, dtype=torch.float64), 2.0, 4, LAMBDAS)
    assert perfect.lam_star == pytest.approx(1.0)
    assert perfect.floor == pytest.approx(4 * float(u.dot(u)) / 4)  # (d + 1)||u||^2 / b, the noise term gone
    assert perfect.variance[0] == pytest.approx((4 * float(u.dot(u)) + 3 * 2.0) / 4)
    # a teacher equal to the student and no label noise: lam = 1 cancels the whole gradient noise
    same = linear_regression_variance(u, u, 0.0, 4, LAMBDAS)
    assert same.lam_star == pytest.approx(1.0) and same.floor == pytest.approx(0.0)


@pytest.mark.parametrize("step", [0, 2000])
def test_closed_form_matches_monte_carlo(step: int) -> None:
    problem = LinearProblem.make(dim=10, teacher_samples=30, seed=1)
    w = sgd_checkpoints(problem, [step])[step]
    predicted = linear_regression_variance(w - problem.w_star, problem.w_teacher - problem.w_star,
                                           problem.noise_var, 10, LAMBDAS)
    measured = linear_measured_curve(problem, w, 10, 3000, LAMBDAS, seed=2)
    for p, m in zip(predicted.variance, measured.variance):
        assert m == pytest.approx(p, rel=0.1)
    assert measured.lam_star == pytest.approx(predicted.lam_star, abs=0.05)


def test_batch_gradients_give_the_gradient_of_the_weighted_loss() -> None:
    from kdforge.analysis.grad_variance import batch_gradients
    from kdforge.losses import hard_cross_entropy, kd_loss

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    batches = [(torch.randn(8, 6), torch.randint(0, 4, (8,))) for _ in range(3)]

    def terms(batch):
        x, y = batch
        logits = student(x)
        return hard_cross_entropy(logits, y), kd_loss(logits, teacher(x).detach(), 4.0)

    a, d = batch_gradients(student, batches, terms)
    lam = 0.3
    for k, batch in enumerate(batches):
        ce, kd = terms(batch)
        student.zero_grad()
        ((1 - lam) * ce + lam * kd).backward()
        direct = torch.cat([student.weight.grad.reshape(-1), student.bias.grad])
        torch.testing.assert_close(a[k] + lam * d[k], direct)
    # the linear softmax case at T = 1: d is minus the teacher's own CE gradient on the batch (the paper's form)
    x, y = batches[0]
    a1, d1 = batch_gradients(student, [batches[0]], lambda b: (hard_cross_entropy(student(x), y),
                                                               kd_loss(student(x), teacher(x).detach(), 1.0)))
    teacher.zero_grad()
    hard_cross_entropy(teacher(x), y).backward()
    torch.testing.assert_close(d1[0], -torch.cat([teacher.weight.grad.reshape(-1), teacher.bias.grad]))
