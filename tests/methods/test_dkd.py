"""DKD from a config: its terms, mdistiller's linear warm-up over epochs, mixed labels, defaults."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import kdforge.models as models
from kdforge.losses import dkd_loss, kd_loss
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher


def _dkd(digits, **params):
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="cnn", params={"channels": [8, 16]}), digits.spec)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [32]}), digits.spec)
    method = build_method(MethodSpec(name="dkd", params=params), student, LiveTeacher(teacher),
                          Setup.for_data(digits.spec, digits.train))
    return method, student, teacher


def test_defaults_are_mdistillers():
    from kdforge.methods import METHODS
    p = METHODS["dkd"].Params()
    assert (p.alpha, p.beta, p.temperature, p.warmup, p.ce_weight, p.kd_weight) == (1.0, 8.0, 4.0, 20, 1.0, 0.0)


@pytest.mark.parametrize("epoch,weight", [(0, 1 / 20), (9, 10 / 20), (19, 1.0), (40, 1.0)])
def test_terms_and_linear_warmup(digits, epoch, weight):
    method, student, teacher = _dkd(digits)
    batch = digits.train.batch(torch.arange(32))
    logits, terms = method.loss_terms(batch, SimpleNamespace(epoch=epoch))
    assert set(terms) == {"ce", "dkd"}
    with torch.no_grad():
        t = teacher(batch.x)
    assert torch.allclose(terms["ce"], F.cross_entropy(logits, batch.y))
    assert torch.allclose(terms["dkd"], weight * dkd_loss(logits, t, batch.y, 1.0, 8.0, 4.0))
    assert terms["dkd"] > 0


def test_no_warmup_kd_term_and_weights(digits):
    method, _, teacher = _dkd(digits, warmup=0, alpha=0.5, beta=2.0, temperature=2.0, ce_weight=0.3, kd_weight=0.7)
    batch = digits.train.batch(torch.arange(16))
    logits, terms = method.loss_terms(batch, SimpleNamespace(epoch=0))
    t = teacher(batch.x).detach()
    assert set(terms) == {"ce", "kd", "dkd"}
    assert torch.allclose(terms["dkd"], dkd_loss(logits, t, batch.y, 0.5, 2.0, 2.0))
    assert torch.allclose(terms["kd"], 0.7 * kd_loss(logits, t, 2.0))
    assert torch.allclose(terms["ce"], 0.3 * F.cross_entropy(logits, batch.y))


def test_mixed_labels_use_the_argmax_for_dkd_and_the_distribution_for_ce(digits):
    method, _, teacher = _dkd(digits, warmup=0)
    batch = digits.train.batch(torch.arange(16))
    other = batch.y.roll(1)
    batch.target = 0.3 * F.one_hot(batch.y, 10).float() + 0.7 * F.one_hot(other, 10).float()
    logits, terms = method.loss_terms(batch, None)
    t = teacher(batch.x).detach()
    assert torch.allclose(terms["dkd"], dkd_loss(logits, t, other))
    assert torch.allclose(terms["ce"], F.cross_entropy(logits, batch.target))
