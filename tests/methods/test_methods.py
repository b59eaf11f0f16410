"""ce / kd / wsl methods: the loss dict they return, gradients, and the teacher left untouched."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.data.types import Batch, DataSpec, Split
from kdforge.methods import METHODS, Setup
from kdforge.losses import kd_loss, wsl_loss
from kdforge.teachers.live import LiveTeacher

C, D, B = 4, 6, 10


def _batch(mixed: bool = False) -> Batch:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (B,), generator=g)
    target = None
    if mixed:
        perm = torch.randperm(B, generator=g)
        target = 0.7 * F.one_hot(y, C).float() + 0.3 * F.one_hot(y[perm], C).float()
    return Batch(x=torch.randn(B, D, generator=g), y=y, index=torch.arange(B), target=target)


def _setup(label_smoothing: float = 0.0) -> Setup:
    return Setup.for_data(DataSpec("toy", (D,), C), Split(torch.randn(B, D), torch.zeros(B, dtype=torch.long)),
                          label_smoothing)


def _models() -> tuple[nn.Module, LiveTeacher]:
    torch.manual_seed(0)
    return nn.Linear(D, C), LiveTeacher(nn.Linear(D, C))


def _make(name: str, **params: float) -> tuple[nn.Module, nn.Module, LiveTeacher]:
    student, teacher = _models()
    method = METHODS[name]
    distiller = method(student, teacher if method.needs_teacher else None, method.Params(**params), _setup())
    return distiller, student, teacher


def test_ce_trains_the_student_alone() -> None:
    student, _ = _models()
    method = METHODS["ce"]
    distiller = method(student, None, method.Params(), _setup(0.1))
    batch = _batch()
    logits, losses = distiller.loss_terms(batch, None)
    assert set(losses) == {"ce"}
    assert torch.allclose(logits, student(batch.x))
    assert torch.allclose(losses["ce"], F.cross_entropy(logits, batch.y, label_smoothing=0.1))


def test_ce_uses_the_mixed_target() -> None:
    distiller, _, _ = _make("ce")
    batch = _batch(mixed=True)
    logits, losses = distiller.loss_terms(batch, None)
    assert torch.allclose(losses["ce"], F.cross_entropy(logits, batch.target))


def test_kd_terms_are_weighted_losses() -> None:
    distiller, student, teacher = _make("kd", temperature=3.0, ce_weight=0.25, kd_weight=0.6)
    batch = _batch()
    logits, losses = distiller.loss_terms(batch, None)
    assert set(losses) == {"ce", "kd"}
    t = teacher(batch.x)
    assert torch.allclose(losses["ce"], 0.25 * F.cross_entropy(logits, batch.y))
    assert torch.allclose(losses["kd"], 0.6 * kd_loss(logits, t, 3.0))


def test_kd_defaults() -> None:
    p = METHODS["kd"].Params()
    assert (p.temperature, p.ce_weight, p.kd_weight) == (4.0, 0.1, 0.9)


@pytest.mark.parametrize("mixed", [False, True])
def test_wsl_terms_are_weighted_losses(mixed: bool) -> None:
    distiller, student, teacher = _make("wsl", temperature=3.0, alpha=1.5, ce_weight=0.5)
    batch = _batch(mixed)
    logits, losses = distiller.loss_terms(batch, None)
    assert set(losses) == {"ce", "wsl"}
    t = teacher(batch.x)
    assert torch.allclose(losses["ce"], 0.5 * F.cross_entropy(logits, batch.labels))
    assert torch.allclose(losses["wsl"], 1.5 * wsl_loss(logits, t, batch.labels, 3.0))


def test_wsl_uniform_weighting_is_kd_at_wsls_recipe() -> None:
    """The control: every weight 1 gives KD's gradient at T with weight alpha (its value is larger by
    alpha T^2 H(p_t), the soft CE's entropy term), and differs from WSL's own term."""
    distiller, student, teacher = _make("wsl", temperature=3.0, alpha=1.5, ce_weight=0.5, weighting="uniform")
    batch = _batch()
    logits, losses = distiller.loss_terms(batch, None)
    t = teacher(batch.x)
    p_t = F.softmax(t / 3.0, dim=1)
    entropy = -(p_t * p_t.log()).sum(dim=1).mean()
    assert torch.allclose(losses["wsl"], 1.5 * (kd_loss(logits, t, 3.0) + 9.0 * entropy), atol=1e-6)
    grad_uniform, = torch.autograd.grad(losses["wsl"], logits)
    grad_kd, = torch.autograd.grad(1.5 * kd_loss(logits, t, 3.0), logits)
    assert torch.allclose(grad_uniform, grad_kd, atol=1e-7)
    assert not torch.allclose(losses["wsl"], 1.5 * wsl_loss(logits, t, batch.labels, 3.0))


def test_wsl_defaults_are_the_official_ones() -> None:
    p = METHODS["wsl"].Params()
    assert (p.temperature, p.alpha, p.ce_weight) == (2.0, 2.5, 1.0)


@pytest.mark.parametrize("name", ["ce", "kd", "wsl"])
def test_gradients_reach_the_student_only(name: str) -> None:
    distiller, student, teacher = _make(name)
    distiller.train()
    assert not teacher.model.training  # a live teacher stays in eval mode
    _, losses = distiller.loss_terms(_batch(), None)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in distiller.trainable().state_dict())


def test_eval_forward_is_the_student() -> None:
    distiller, student, _ = _make("kd")
    x = _batch().x
    assert torch.equal(distiller(x), student(x))


def test_teacher_methods_refuse_no_teacher() -> None:
    student, _ = _models()
    with pytest.raises(ValueError, match="needs a teacher"):
        METHODS["wsl"](student, None, METHODS["wsl"].Params(), _setup())


@pytest.mark.parametrize("filter_t", [1.0, 3.0])
def test_wsl_filter_drops_the_soft_term_on_regularization_samples(filter_t: float) -> None:
    """weighting filter (issue 26, Zhou et al.'s filtering): the soft CE of samples where the student fits the
    label better than the teacher at filter_temperature is removed, the batch mean kept; no gradient reaches their
    logits through the soft term."""
    distiller, student, teacher = _make("wsl", temperature=3.0, alpha=1.5, ce_weight=0.0, weighting="filter",
                                        filter_temperature=filter_t)
    batch = _batch()
    logits, losses = distiller.loss_terms(batch, None)
    t = teacher(batch.x)
    p_s = F.softmax(logits / filter_t, 1).gather(1, batch.labels[:, None]).squeeze(1)
    p_t = F.softmax(t / filter_t, 1).gather(1, batch.labels[:, None]).squeeze(1)
    reg = p_s > p_t
    assert 0 < int(reg.sum()) < len(reg)  # the check below means something only with both kinds in the batch
    soft = -(F.softmax(t / 3.0, 1) * F.log_softmax(logits / 3.0, 1)).sum(1)
    expected = 1.5 * 9.0 * (soft * (~reg).float()).sum() / len(soft)
    assert torch.allclose(losses["wsl"], expected, atol=1e-6)
    grad, = torch.autograd.grad(losses["wsl"], logits)
    assert grad[reg].abs().max() == 0 and grad[~reg].abs().max() > 0
