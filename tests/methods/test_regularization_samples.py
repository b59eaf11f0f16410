"""WSL's regularization samples (Zhou et al., ICLR 2021): the criterion, and KD/WSL's per-epoch counts through
the method contract's epoch hook."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import kdforge.models as models
from kdforge.engine import Runtime
from kdforge.losses import gradient_dominance_samples, regularization_samples
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher


def test_criterion_hand_values() -> None:
    student = torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # student surer of the label than the teacher | less sure | tie (not a regularization sample)
    assert regularization_samples(student, teacher, labels).tolist() == [True, False, False]
    # a mixup distribution reduces to the int label when one-hot
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    assert regularization_samples(student, teacher, onehot, 2.0).tolist() == \
        regularization_samples(student, teacher, labels, 2.0).tolist()


def test_criterion_matches_true_class_probabilities_at_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(64, 5, generator=g) * 3, torch.randn(64, 5, generator=g) * 3
    y = torch.randint(0, 5, (64,), generator=g)
    for temp in (1.0, 4.0):
        ps = (s / temp).softmax(1).gather(1, y[:, None])[:, 0]
        pt = (t / temp).softmax(1).gather(1, y[:, None])[:, 0]
        assert torch.equal(regularization_samples(s, t, y, temp), ps > pt)


@pytest.mark.parametrize("name,params", [("kd", {"temperature": 4.0}), ("wsl", {"temperature": 2.0})])
def test_counts_per_epoch_through_on_epoch_end(digits, name: str, params: dict) -> None:
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="mlp", params={"hidden": [16]}), digits.spec)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [8]}), digits.spec)
    method = build_method(MethodSpec(name=name, params={**params, "count_regularization": True}), student,
                          LiveTeacher(teacher), Setup.for_data(digits.spec, digits.train))
    logged: list[dict] = []
    ctx = SimpleNamespace(epoch=0, runtime=Runtime.from_env("cpu"), log=lambda **v: logged.append(v))
    expected, at_one, grad = 0, 0, 0
    for rows in (torch.arange(0, 40), torch.arange(40, 100)):
        batch = digits.train.batch(rows)
        logits, _ = method.loss_terms(batch, ctx)
        with torch.no_grad():
            t = teacher(batch.x)
            expected += int(regularization_samples(logits, t, batch.y, params["temperature"]).sum())
            at_one += int(regularization_samples(logits, t, batch.y, 1.0).sum())
            grad += int(gradient_dominance_samples(logits, t, batch.y, params["temperature"]).sum())
    saved = method.extra_state()
    method.on_epoch_end(ctx)
    assert logged == [{"reg_samples": expected, "reg_fraction": expected / 100, "reg_fraction_t1": at_one / 100,
                       "reg_fraction_grad": grad / 100}]
    method.on_epoch_end(ctx)  # counts start again each epoch: an epoch without steps logs nothing
    assert len(logged) == 1
    method.load_extra_state(saved)  # a resumed run continues the epoch's count
    method.on_epoch_end(ctx)
    assert logged[-1]["reg_samples"] == expected


@pytest.mark.parametrize("name", ["kd", "wsl"])
def test_counter_off_by_default(digits, name: str, monkeypatch) -> None:
    """Training does not use the count: it costs nothing per step unless an analysis asks for it."""
    import kdforge.methods.regularization as reg

    calls = []
    monkeypatch.setattr(reg, "regularization_samples", lambda *a, **k: calls.append(1) or regularization_samples(*a, **k))
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="mlp", params={"hidden": [16]}), digits.spec)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [8]}), digits.spec)
    method = build_method(MethodSpec(name=name), student, LiveTeacher(teacher), Setup.for_data(digits.spec, digits.train))
    logged: list[dict] = []
    ctx = SimpleNamespace(epoch=0, runtime=Runtime.from_env("cpu"), log=lambda **v: logged.append(v))
    method.loss_terms(digits.train.batch(torch.arange(0, 40)), ctx)
    method.on_epoch_end(ctx)
    assert calls == [] and logged == [] and method.extra_state() == {}


def test_gradient_dominance_hand_values() -> None:
    """D2 (issue 26 spec §2): |T (p^T_s,y - p^T_t,y) - (p_s,y - 1)| > |p_s,y - 1| at the true class."""
    # two classes, label 0. Row 1: student and teacher equal -> variance gradient = -(bias gradient): a tie, not
    # counted. Row 2: p_s = 0.9, teacher logits (0, 0): T = 1 gives 1 (0.9 - 0.5) + 0.1 = 0.5 > 0.1.
    # Row 3: p_s = 0.5, teacher 0.9: -0.4 + 0.5 = 0.1 < 0.5.
    s = torch.tensor([[0.0, 0.0], [math.log(9.0), 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.log(9.0), 0.0]])
    y = torch.tensor([0, 0, 0])
    assert gradient_dominance_samples(s, t, y).tolist() == [False, True, False]
    assert gradient_dominance_samples(s, t, torch.eye(2)[y]).tolist() == [False, True, False]  # a distribution
