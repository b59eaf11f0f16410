"""KD as partial variance reduction (Safaryan, Peste & Alistarh, NeurIPS 2023): the variance of the student's
stochastic gradient under the loss (1 - lam) * CE + lam * KD, over many mini-batches, as a function of lam.

The official code (IST-DASLab/KDVR, `utils/kd_utils.py`, `train_epoch_KD`) weights the terms as above. Writing
a_k = grad CE on mini-batch k and d_k = grad KD_k - grad CE_k, the step is g_k(lam) = a_k + lam * d_k, so
  Var(lam) = Var(a) + 2 lam Cov(a, d) + lam^2 Var(d)            (Var = trace of the covariance over batches)
is a parabola with its minimum at lam* = -Cov(a, d) / Var(d) and the floor Var(a) - Cov(a, d)^2 / Var(d): the
control-variate optimum. For a linear softmax student at T = 1 with a teacher of the same form, d_k = -grad f_k(w_t)
and g_k = grad f_k(w_s) - lam grad f_k(w_t), the paper's "distillation gradient" (its Sec. 3; methods.md §2): an
SVRG-like correction whose control variate is not re-centred, so the variance is reduced, not removed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class VarianceCurve:
    """Measured gradient variance at each lam, and the control-variate optimum estimated from the same batches."""

    lambdas: list[float]
    variance: list[float]
    lam_star: float
    floor: float
    # argmin of the second moment E||a + lam d||^2 (not centred): -E<a, d> / E||d||^2. It differs from lam_star by
    # the imperfect teacher's mean gradient, the form an SGD bound at the optimum uses (issue 26 spec §3).
    lam_star_uncentered: float = float("nan")

    def as_dict(self) -> dict[str, object]:
        return {"lambdas": self.lambdas, "variance": self.variance, "lam_star": self.lam_star, "floor": self.floor,
                "lam_star_uncentered": self.lam_star_uncentered}


def _total_variance(g: Tensor) -> Tensor:
    """Trace of the covariance of the rows of g [K, P]: mean_k ||g_k - mean g||^2 (1/K, as the paper's E)."""
    return ((g - g.mean(0, keepdim=True)) ** 2).sum(1).mean()


def variance_curve(a: Tensor, d: Tensor, lambdas: Sequence[float]) -> VarianceCurve:
    """Var(a + lam d) measured directly at every lam (not through the parabola), and lam*, floor from the moments."""
    if a.shape != d.shape or a.dim() != 2 or len(a) < 2:
        raise ValueError(f"need per-batch gradients a, d of one shape [batches >= 2, params]; got {tuple(a.shape)}, "
                         f"{tuple(d.shape)}")
    a, d = a.double(), d.double()
    measured = [float(_total_variance(a + lam * d)) for lam in lambdas]
    ac, dc = a - a.mean(0), d - d.mean(0)
    cov, var_d = float((ac * dc).sum(1).mean()), float((dc * dc).sum(1).mean())
    var_a = float((ac * ac).sum(1).mean())
    second_d = float((d * d).sum(1).mean())
    lam_u = -float((a * d).sum(1).mean()) / second_d if second_d > 0 else 0.0
    if var_d == 0:  # the distillation term changes nothing: every lam is optimal
        return VarianceCurve(list(lambdas), measured, 0.0, var_a, lam_u)
    return VarianceCurve(list(lambdas), measured, -cov / var_d, var_a - cov * cov / var_d, lam_u)


def _flat_grad(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def batch_gradients(model: nn.Module, batches: Sequence[object],
                    terms: Callable[[object], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(a, d) [K, P]: per batch, the gradient of the hard-label term and of (distillation term - hard term).

    `terms(batch)` returns (ce, kd) for one batch from a forward of `model`; the model is left unchanged.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    rows_a, rows_d = [], []
    for batch in batches:
        ce, kd = terms(batch)
        grad_ce = _flat_grad(ce, params)
        rows_a.append(grad_ce.detach())
        rows_d.append((_flat_grad(kd, params) - grad_ce).detach())
    return torch.stack(rows_a), torch.stack(rows_d)


# ---- the linear experiment: closed form for Gaussian linear regression ----------------------------------------
def linear_regression_variance(u: Tensor, u_t: Tensor, noise_var: float, batch_size: int,
                               lambdas: Sequence[float]) -> VarianceCurve:
    """Predicted Var(lam) of the mini-batch KD gradient for y = x.w* + eps, x ~ N(0, I_d), eps ~ N(0, sigma^2),
    student w = w* + u, teacher w_t = w* + u_t, loss (1 - lam)/2 (x.w - y)^2 + lam/2 (x.w - x.w_t)^2.

    Per sample g = x (x.v - (1 - lam) eps) with v = u - lam u_t, and E||g||^2 = (d + 2)||v||^2 + d sigma^2 (1-lam)^2
    (Gaussian fourth moments), ||E g||^2 = ||v||^2, so for b independent samples
      Var(lam) = [(d + 1)||u - lam u_t||^2 + d sigma^2 (1 - lam)^2] / b,
      lam* = ((d + 1) u.u_t + d sigma^2) / ((d + 1)||u_t||^2 + d sigma^2).
    A perfect teacher (u_t = 0) gives lam* = 1 and the floor (d + 1)||u||^2 / b: the label noise is removed and
    what remains vanishes only as the student converges; an imperfect teacher leaves a floor above that (the
    paper's "partial" variance reduction). Derived here for this instance of the paper's linear setting.
    """
    dim = u.numel()

    def var(lam: float) -> float:
        v = u - lam * u_t
        return float(((dim + 1) * v.dot(v) + dim * noise_var * (1 - lam) ** 2) / batch_size)

    lam_star = float(((dim + 1) * u.dot(u_t) + dim * noise_var) / ((dim + 1) * u_t.dot(u_t) + dim * noise_var))
    return VarianceCurve(list(lambdas), [var(lam) for lam in lambdas], lam_star, var(lam_star))


@dataclass(frozen=True)
class LinearProblem:
    """A synthetic regression problem with a teacher fitted on few samples (so it is imperfect)."""

    w_star: Tensor
    w_teacher: Tensor
    noise_var: float

    @classmethod
    def make(cls, dim: int = 20, teacher_samples: int = 60, noise_var: float = 1.0, seed: int = 0) -> "LinearProblem":
        g = torch.Generator().manual_seed(seed)
        w_star = torch.randn(dim, generator=g, dtype=torch.float64)
        x = torch.randn(teacher_samples, dim, generator=g, dtype=torch.float64)
        y = x @ w_star + noise_var**0.5 * torch.randn(teacher_samples, generator=g, dtype=torch.float64)
        return cls(w_star, torch.linalg.lstsq(x, y[:, None]).solution[:, 0], noise_var)

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn(n, len(self.w_star), generator=g, dtype=torch.float64)
        return x, x @ self.w_star + self.noise_var**0.5 * torch.randn(n, generator=g, dtype=torch.float64)


def linear_measured_curve(problem: LinearProblem, w_student: Tensor, batch_size: int, batches: int,
                          lambdas: Sequence[float], seed: int = 0) -> VarianceCurve:
    """Monte-Carlo Var(lam) over fresh mini-batches, through autograd on an nn.Linear student (the same
    `batch_gradients` path the network analysis uses), to set against `linear_regression_variance`."""
    student = nn.Linear(len(w_student), 1, bias=False).double()
    with torch.no_grad():
        student.weight.copy_(w_student[None])
    g = torch.Generator().manual_seed(seed)
    data = [problem.sample(batch_size, g) for _ in range(batches)]

    def terms(batch: object) -> tuple[Tensor, Tensor]:
        x, y = batch  # type: ignore[misc]
        pred = student(x)[:, 0]
        return 0.5 * ((pred - y) ** 2).mean(), 0.5 * ((pred - x @ problem.w_teacher) ** 2).mean()

    a, d = batch_gradients(student, data, terms)
    return variance_curve(a, d, lambdas)


def sgd_checkpoints(problem: LinearProblem, steps: Sequence[int], lr: float = 0.01, batch_size: int = 10,
                    seed: int = 0) -> dict[int, Tensor]:
    """The student's weights after each of `steps` plain SGD steps on the labels from w = 0 (the checkpoints at
    which the variance is measured: far from, and near to, the optimum)."""
    g = torch.Generator().manual_seed(seed + 1)
    w = torch.zeros_like(problem.w_star)
    out, last = {}, max(steps)
    for step in range(last + 1):
        if step in steps:
            out[step] = w.clone()
        x, y = problem.sample(batch_size, g)
        w = w - lr * x.T @ (x @ w - y) / batch_size
    return out
