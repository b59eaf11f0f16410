"""AT, SP, NST, PKT and RKD from a config on digits: their terms and values, gradients reach the student and not
the teacher, nothing but the student is trained, and bad layer settings are one-line ConfigErrors naming the key."""
import math

import pytest
import torch

import kdforge.models as models
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.losses import at_loss, nst_loss, pkt_loss, rkd_loss, sp_loss
from kdforge.methods import METHODS, MethodSpec, Setup, build as build_method
from kdforge.models import ModelSpec
from kdforge.models.taps import Taps
from kdforge.teachers import LiveTeacher

# cnn on 8x8 digits: features = [conv, bn, relu, pool] x 2, so features.3 is 4x4 and features.7 is 2x2;
# head = [linear, relu, dropout, linear], so head.3:input is the embedding the classifier sees (feat[-1]).
MAPS = {"student_layers": ["features.3", "features.7"], "teacher_layers": ["features.3", "features.7"]}
EMBEDDING = {"student_layer": "head.3:input", "teacher_layer": "head.3:input"}
CASES = {  # name: (layer params, the loss of one pair with default options, weight key)
    "at": (MAPS, at_loss, "at_weight"),
    "sp": ({"student_layers": ["features.7"], "teacher_layers": ["features.7"]}, sp_loss, "sp_weight"),
    "nst": (MAPS, nst_loss, "nst_weight"),
    "pkt": (EMBEDDING, pkt_loss, "pkt_weight"),
    "rkd": (EMBEDDING, rkd_loss, "rkd_weight"),
}


def _models(digits):
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="cnn", params={"channels": [16, 32]}), digits.spec)
    student = models.build(ModelSpec(name="cnn", params={"channels": [4, 8], "hidden": 16}), digits.spec)
    return student, teacher


def _method(digits, name, **params):
    student, teacher = _models(digits)
    cfg = MethodSpec(name=name, params={**CASES[name][0], **params})
    method = build_method(cfg, student, LiveTeacher(teacher), Setup.for_data(digits.spec, digits.train))
    return method, student, teacher


def _paths(params):
    if "student_layers" in params:
        return list(zip(params["student_layers"], params["teacher_layers"]))
    return [(params["student_layer"], params["teacher_layer"])]


@pytest.mark.parametrize("name", sorted(CASES))
def test_terms_are_the_weighted_sum_of_pair_losses(digits, name):
    layers, loss, weight_key = CASES[name]
    method, student, teacher = _method(digits, name, ce_weight=0.5)
    batch = digits.train.batch(torch.arange(16))
    logits, terms = method.loss_terms(batch, None)
    assert set(terms) == {"ce", name} and logits.shape == (16, 10)
    assert torch.isclose(terms["ce"], 0.5 * torch.nn.functional.cross_entropy(logits, batch.y))
    # the same features tapped independently, the same loss by hand
    pairs = _paths(layers)
    s_taps, t_taps = Taps(student, [s for s, _ in pairs]), Taps(teacher, [t for _, t in pairs])
    with s_taps.capture() as s_feats:
        student(batch.x)
    with torch.no_grad(), t_taps.capture() as t_feats:
        teacher(batch.x)
    expected = getattr(method.params, weight_key) * sum(loss(s_feats[s], t_feats[t]) for s, t in pairs)
    assert torch.isclose(terms[name], expected, rtol=1e-5)
    assert math.isfinite(terms[name].item()) and terms[name].item() > 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_reach_the_student_and_not_the_teacher(digits, name):
    method, student, teacher = _method(digits, name)
    _, terms = method.loss_terms(digits.train.batch(torch.arange(16)), None)
    terms[name].backward()  # the feature term alone
    assert student.features[0].weight.grad is not None and student.features[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    keys = method.trainable().state_dict()
    assert keys and all(k.startswith("student.") for k in keys)  # nothing but the student is trained


@pytest.mark.parametrize("name", sorted(CASES))
def test_kd_term_is_added_when_weighted(digits, name):
    method, _, _ = _method(digits, name, kd_weight=0.9, temperature=4.0)
    _, terms = method.loss_terms(digits.train.batch(torch.arange(8)), None)
    assert set(terms) == {"ce", "kd", name}


def test_defaults_are_repdistillers():
    expected = {"at": ("at_weight", 1000.0), "sp": ("sp_weight", 3000.0), "nst": ("nst_weight", 50.0),
                "pkt": ("pkt_weight", 30000.0), "rkd": ("rkd_weight", 1.0)}
    for name, (key, value) in expected.items():
        p = METHODS[name].Params(**CASES[name][0])
        assert getattr(p, key) == value and (p.ce_weight, p.kd_weight, p.temperature) == (1.0, 0.0, 4.0)
    assert METHODS["at"].Params(**MAPS).p == 2
    rkd = METHODS["rkd"].Params(**EMBEDDING)
    assert (rkd.distance_weight, rkd.angle_weight) == (25.0, 50.0)
    assert METHODS["pkt"].Params(**EMBEDDING).eps == 1e-7


@pytest.mark.parametrize("name,key,value", [
    ("at", "student_layers", ["features.3", "features.70"]),
    ("nst", "teacher_layers", ["layer1", "features.7"]),
    ("sp", "student_layers", ["head.9"]),
    ("pkt", "student_layer", "fc:input"),
    ("rkd", "teacher_layer", "head.30:input"),
])
def test_bad_layer_paths_name_the_key(digits, name, key, value):
    with pytest.raises(ConfigError, match=rf"^method\.params\.{key}: no module '[^']+' in Sequential") as e:
        _method(digits, name, **{key: value})
    assert "\n" not in str(e.value)


def test_unpaired_layer_lists_and_incomparable_shapes_are_config_errors(digits):
    with pytest.raises(ConfigError, match=r"method\.params.*must pair up one to one") as e:
        _method(digits, "at", teacher_layers=["features.7"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^method\.params: student layer 'features\.7' \(8, 2, 2\) and teacher "
                                          r"layer 'head\.3:input' \(128,\) cannot be compared by nst") as e:
        _method(digits, "nst", student_layers=["features.7"], teacher_layers=["head.3:input"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["at", "rkd"])
def test_one_epoch_on_digits(digits, name, tmp_path):
    from kdforge.data import Batches
    from kdforge.engine import Trainer

    method, _, _ = _method(digits, name)
    recipe = Recipe(optim=OptimSettings(lr=0.05), train=LoopSettings(epochs=1, progress=False, tensorboard=False))
    result = Trainer(method, Batches(digits, 64), recipe, tmp_path).fit()
    assert {"ce", name} <= set(result.history[0]) and math.isfinite(result.history[0][name])
