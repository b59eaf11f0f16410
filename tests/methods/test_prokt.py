"""ProKT as a method: the guide steps first on its projected objective, the student then fits the updated guide;
the guide is a trained, checkpointed copy (the teacher itself untouched) and resume is bit-identical."""
from __future__ import annotations

import copy

import pytest
import torch

import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.losses import hard_cross_entropy, kd_loss, prokt_teacher_loss
from kdforge.methods import METHODS, Setup
from kdforge.models import ModelSpec
from kdforge.teachers.live import LiveTeacher
from support import Stop, full_and_resumed


def _trainer(run_dir: str, epochs: int = 2, callbacks: tuple = (), **params) -> Trainer:
    bundle = build_data(DataConfig(name="digits", train_subset=300))
    seed_everything(0)
    teacher = LiveTeacher(models.build(ModelSpec(name="mlp", params={"hidden": [32]}), bundle.spec))
    student = models.build(ModelSpec(name="mlp", params={"hidden": [8]}), bundle.spec)
    method = METHODS["prokt"](student, teacher, METHODS["prokt"].Params(**params),
                              Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(seed=0, optim=OptimSettings(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0),
                    train=LoopSettings(epochs=epochs, progress=False, tensorboard=False))
    return Trainer(method, Batches(bundle, 50), recipe, run_dir, callbacks=callbacks)


def test_one_step_guide_first_then_student_on_the_updated_guide(tmp_path):
    t = _trainer(str(tmp_path / "run"), guide_init="teacher", proximal_weight=0.5, temperature=2.0)
    m = t.method
    teacher_w = {k: v.clone() for k, v in m.teacher.model.state_dict().items()}
    guide0, student0 = copy.deepcopy(m.guide), copy.deepcopy(m.student)
    assert all(torch.equal(a, b) for a, b in zip(guide0.state_dict().values(), teacher_w.values()))
    seen = {}
    real = m.training_step

    def once(batch, ctx):
        seen["out"] = real(batch, ctx)
        seen["batch"] = batch
        raise Stop

    m.training_step = once
    with pytest.raises(Stop):
        t.fit()
    batch = seen["batch"]
    # by hand: one SGD step of the guide on CE + 0.5 KL(q_T || p_S) at T=2, then the student on the new guide
    opt = torch.optim.SGD(guide0.parameters(), lr=0.1)
    prokt_teacher_loss(guide0(batch.x), student0(batch.x), batch.y, 0.5, 2.0).backward()
    opt.step()
    for a, b in zip(guide0.parameters(), m.guide.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    s_opt = torch.optim.SGD(student0.parameters(), lr=0.1)
    logits = student0(batch.x)
    (hard_cross_entropy(logits, batch.y) + kd_loss(logits, guide0(batch.x).detach(), 2.0)).backward()
    s_opt.step()
    for a, b in zip(student0.parameters(), m.student.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.equal(v, teacher_w[k]) for k, v in m.teacher.model.state_dict().items())  # teacher untouched
    assert set(seen["out"].terms) == {"ce", "kd"} and "guide_loss" in seen["out"].metrics


def test_scratch_guide_is_reinitialised_and_resume_is_bit_identical(tmp_path):
    m = _trainer(str(tmp_path / "fresh")).method
    assert not any(torch.equal(g, t) for g, t in zip(m.guide.parameters(), m.teacher.model.parameters()))
    full, full_result, resumed, result = full_and_resumed(_trainer, tmp_path)
    assert result.resumed_from == 0  # the epoch whose checkpoint it resumed from
    a = full.method.trainable().state_dict()
    b = resumed.method.trainable().state_dict()
    assert any(k.startswith("guide.") for k in a) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result.test == full_result.test


def test_a_cached_teacher_is_refused():
    bundle = build_data(DataConfig(name="digits", train_subset=50))
    student = models.build(ModelSpec(name="mlp", params={"hidden": [8]}), bundle.spec)

    class Cached:  # a source without a model to copy
        network = None

        def outputs(self, batch):
            raise AssertionError

    with pytest.raises(ConfigError, match="teacher.source: live"):
        METHODS["prokt"](student, Cached(), METHODS["prokt"].Params(), Setup.for_data(bundle.spec, bundle.train))
