"""DFA as a method: stages and connectors from tapped shapes, the bridge loss against a hand-written forward, the
search moving alpha and a copy of the student (never the student), the derived aggregation saved and reused, an
exact resume across the stage boundary, and one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.losses import aggregate_features, hint_loss
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.methods.dfa import AGGREGATION_FILE
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher

from support import full_and_resumed

# digits 8x8: features = [conv, bn, relu, pool] x 2; features.4 (the second conv, 4x4) is pooled into the stage
# output features.7 (2x2) when aggregated.
STAGES = [{"student_layer": "features.3", "teacher_layers": ["features.0", "features.3"]},
          {"student_layer": "features.7", "teacher_layers": ["features.4", "features.7"]}]


@pytest.fixture(scope="module")
def digits():
    return build_data(DataConfig(name="digits", val_fraction=0.2, train_subset=400))


def _dfa(digits, teacher=None, **params):
    seed_everything(0)
    teacher = teacher or LiveTeacher(models.build(ModelSpec(name="cnn", params={"channels": [16, 32]}), digits.spec))
    student = models.build(ModelSpec(name="cnn", params={"channels": [4, 8], "hidden": 16}), digits.spec)
    cfg = MethodSpec(name="dfa", params={"stages": STAGES, "arch_lr": 0.05, **params})
    return build_method(cfg, student, teacher, Setup.for_data(digits.spec, digits.train))


def _trainer(digits, run_dir, epochs=3, callbacks=(), **params) -> Trainer:
    method = _dfa(digits, **{"search_epochs": 2, **params})
    recipe = Recipe(seed=0, optim=OptimSettings(name="sgd", lr=0.05),
                    train=LoopSettings(epochs=epochs, progress=False, tensorboard=False))
    return Trainer(method, Batches(digits, 64), recipe, run_dir, callbacks=callbacks)


def test_stages_build_connectors_to_the_stage_outputs(digits):
    m = _dfa(digits)
    assert [c.conv.out_channels for c in m.connectors] == [16, 32]
    assert [a.shape for a in m.arch] == [(2,), (2,)]
    assert not m.is_derived and hasattr(m, "search_student")
    keys = m.trainable().state_dict()
    assert {"arch.0", "derived", "is_derived"} <= set(keys) and any(k.startswith("search_student.") for k in keys)
    assert not any(k.startswith(("teacher", "model.")) for k in keys)  # the teacher is not checkpointed
    # the copy carries its own taps only (one hook per stage), not copies of the student's
    assert sum(len(x._forward_hooks) for x in m.search_student.modules()) == len(STAGES)


def test_bridge_loss_is_hint_plus_the_teachers_later_layers_on_the_aggregation(digits):
    m = _dfa(digits)
    with torch.no_grad():
        m.arch[1].copy_(torch.tensor([0.3, -0.2]))
    val = digits.val.batch(torch.arange(32))
    learn, express = m.bridge_loss(val)
    t = m.teacher.model
    feats = {}
    x = val.x
    with torch.no_grad():
        for i, layer in enumerate(t.features):
            x = layer(x)
            feats[f"features.{i}"] = x.clone()
        s = m.search_student.features(val.x)
        s3 = m.search_student.features[:4](val.x)
    aggs = [aggregate_features([feats[p] for p in st["teacher_layers"]], a.softmax(0)) for st, a in zip(STAGES, m.arch)]
    want_learn = hint_loss(m.search_connectors[0](s3), aggs[0]) + hint_loss(m.search_connectors[1](s), aggs[1])
    # the rest of the teacher after each stage output, written out: stage 0 goes on through features[4:]
    rest0 = t.head(t.flatten(t.pool(t.features[4:](aggs[0]))))
    rest1 = t.head(t.flatten(t.pool(aggs[1])))
    want_express = F.cross_entropy(rest0, val.y) + F.cross_entropy(rest1, val.y)
    assert torch.allclose(learn, want_learn, rtol=1e-5) and torch.allclose(express, want_express, rtol=1e-5)
    g = torch.autograd.grad(express, list(m.arch))
    assert all(x.abs().sum() > 0 for x in g)  # alpha gets a gradient through the teacher's later layers


def test_search_moves_alpha_and_a_copy_never_the_student_then_derives_and_saves(digits, tmp_path):
    t = _trainer(digits, str(tmp_path / "run"), epochs=3)
    m = t.method
    initial = {k: v.clone() for k, v in m.student.state_dict().items()}
    copy0 = {k: v.clone() for k, v in m.search_student.state_dict().items()}
    t.fit()
    saved = json.loads((tmp_path / "run" / AGGREGATION_FILE).read_text())
    w = [s["weights"] for s in saved["stages"]]
    assert [s["teacher_layers"] for s in saved["stages"]] == [s["teacher_layers"] for s in STAGES]
    assert all(abs(sum(x) - 1) < 1e-6 for x in w) and any(abs(x[0] - 0.5) > 1e-3 for x in w)  # alpha moved
    assert m.is_derived and torch.allclose(m.derived, torch.tensor([v for x in w for v in x]))
    assert any(not torch.equal(copy0[k], v) for k, v in m.search_student.state_dict().items())
    assert any(not torch.equal(initial[k], v) for k, v in m.student.state_dict().items())  # trained in stage 2
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["event"] == "epoch"]
    assert "expressivity" in epochs[0] and "expressivity" not in epochs[-1]


def test_the_student_is_untouched_during_the_search(digits, tmp_path):
    t = _trainer(digits, str(tmp_path / "run"), epochs=3)
    before = {k: v.clone() for k, v in t.method.student.state_dict().items()}
    alpha = [a.detach().clone() for a in t.method.arch]
    batch = digits.train.batch(torch.arange(64))
    t.method.training_step(batch, t.ctx)
    assert all(torch.equal(before[k], v) for k, v in t.method.student.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(alpha, t.method.arch))


def test_a_saved_aggregation_starts_a_run_with_no_search(digits, tmp_path):
    _trainer(digits, str(tmp_path / "searched"), epochs=3).fit()
    path = tmp_path / "searched" / AGGREGATION_FILE
    m = _dfa(digits, aggregation=str(path))
    assert m.is_derived and not hasattr(m, "search_student")
    saved = json.loads(path.read_text())
    assert torch.allclose(m.derived, torch.tensor([v for s in saved["stages"] for v in s["weights"]]))
    other = dict(STAGES[0], teacher_layers=["features.3"])
    with pytest.raises(ConfigError, match=r"method\.params\.aggregation: .* aggregates teacher layers"):
        build_method(MethodSpec(name="dfa", params={"stages": [other], "aggregation": str(path)}),
                     m.student, m.teacher, m.setup)
    with pytest.raises(ConfigError, match=r"method\.params\.aggregation: cannot read"):
        _dfa(digits, aggregation=str(tmp_path / "missing.json"))


def test_stop_mid_search_and_resume_is_bit_identical(digits, tmp_path):
    full, full_result, resumed, result = full_and_resumed(lambda d, callbacks=(): _trainer(digits, d, 3, callbacks),
                                                          tmp_path)
    a, b = (t.method.trainable().state_dict() for t in (full, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result.test == full_result.test


def test_bad_inputs_are_one_line_config_errors(digits, tmp_path):
    bad = [{"student_layer": "features.7", "teacher_layers": ["features.0", "features.7"]}]  # 16 vs 32 channels
    with pytest.raises(ConfigError, match=r"method\.params\.stages: stage 0: teacher map 'features\.0'"):
        _dfa(digits, stages=bad)
    teacher = LiveTeacher(models.build(ModelSpec(name="cnn", params={"channels": [16, 32]}), digits.spec))

    class Recorded:  # a teacher source with no model to run (a cache)
        network = None

        def tap(self, paths):
            teacher.tap(paths)

        def outputs(self, batch):
            return teacher.outputs(batch)

    with pytest.raises(ConfigError, match="teacher.source=live"):
        _dfa(digits, teacher=Recorded())
    assert _dfa(digits, teacher=Recorded(), search_epochs=0).weights()[0].tolist() == [0.5, 0.5]  # uniform, no search
    with pytest.raises(ConfigError, match=r"search_epochs=3 leaves no epoch of train\.epochs=3"):
        _trainer(digits, str(tmp_path / "run"), epochs=3, search_epochs=3)
    with pytest.raises(ConfigError, match="skips the search: set search_epochs=0"):
        _dfa(digits, aggregation="x.json", search_epochs=1)


def test_the_search_needs_a_validation_split_distinct_from_test():
    from kdforge.methods import check_data

    no_val = build_data(DataConfig(name="digits", val_fraction=0.0))
    cfg = MethodSpec(name="dfa", params={"stages": STAGES})
    with pytest.raises(ConfigError, match="architecture parameters of method 'dfa'.*val_fraction"):
        check_data(cfg, no_val)
    check_data(MethodSpec(name="dfa", params={"stages": STAGES, "search_epochs": 0}), no_val)  # no search: fine
