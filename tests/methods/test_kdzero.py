"""The kdzero method: its params are a distiller program; the default program is Hinton KD, programs are checked
against the knowledge's shapes at build time, and feature branches tap both models."""
import pytest
import torch
from kdforge.data.types import Batch, DataSpec, Split
from kdforge.errors import ConfigError
from kdforge.losses import at_loss
from kdforge.methods import METHODS, MethodSpec, Setup, build
from kdforge.models import ModelSpec, build as build_model
from kdforge.teachers.live import LiveTeacher

SPEC = DataSpec("toy", (1, 8, 8), 5)


def _setup() -> Setup:
    g = torch.Generator().manual_seed(0)
    return Setup.for_data(SPEC, Split(torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 5))


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.randn(12, 1, 8, 8, generator=g), y=torch.arange(12) % 5, index=torch.arange(12))


def _models():
    torch.manual_seed(0)
    student = build_model(ModelSpec(name="cnn", params={"channels": [4, 8], "hidden": 16}), SPEC)
    teacher = build_model(ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32}), SPEC)
    return student, LiveTeacher(teacher)


def _method(params):
    student, teacher = _models()
    return build(MethodSpec(name="kdzero", params=params), student, teacher, _setup())


def test_default_program_is_hinton_kd():
    student, teacher = _models()
    kd = METHODS["kd"](student, teacher, METHODS["kd"].Params(), _setup())
    zero = METHODS["kdzero"](student, teacher, METHODS["kdzero"].Params(), _setup())
    batch = _batch()
    _, kd_terms = kd.loss_terms(batch, None)
    _, zero_terms = zero.loss_terms(batch, None)
    assert torch.allclose(sum(kd_terms.values()), sum(zero_terms.values()), atol=1e-6)


def test_feature_branch_attention_is_attention_transfer_and_trains_the_student():
    m = _method({"ce_weight": 0.0, "branches": [
        {"knowledge": "features", "student": "features.3", "teacher": "features.3",
         "transforms": ["attention", "l2norm"], "distance": "l2", "weight": 2.0}]})
    batch = _batch()
    _, terms = m.loss_terms(batch, None)
    with m.taps.capture() as feats:
        batch.forward(m.student)
    t_feat = m.teacher.outputs(batch).features["features.3"]
    assert torch.allclose(terms["kdzero0"], 2.0 * at_loss(feats["features.3"], t_feat, 2), atol=1e-6)
    terms["kdzero0"].backward()
    assert m.student.features[0].weight.grad.abs().sum() > 0


def test_two_branches_are_summed_terms():
    m = _method({"branches": [{"transforms": ["softmax:2"], "distance": "kl", "weight": 4.0},
                              {"transforms": ["mask_target", "softmax:4"], "distance": "kl", "weight": 8.0}]})
    _, terms = m.loss_terms(_batch(), None)
    assert set(terms) == {"ce", "kdzero0", "kdzero1"}


@pytest.mark.parametrize("branch, match", [
    ({"transforms": ["sofmax:4"], "distance": "kl", "weight": 1}, r"unknown transform 'sofmax' \(did you mean"),
    ({"transforms": ["softmax"], "distance": "kl", "weight": 1}, "takes an argument"),
    ({"transforms": ["l2norm:3"], "distance": "kl", "weight": 1}, "takes no argument"),
    ({"transforms": ["softmax:-1"], "distance": "kl", "weight": 1}, "positive"),
    ({"distance": "kll", "weight": 1}, "unknown distance 'kll'"),
    ({"knowledge": "features", "distance": "l2", "weight": 1}, "needs the module paths"),
    ({"distance": "l2", "weight": -1}, "greater than or equal to 0"),
])
def test_bad_programs_are_config_errors_naming_the_key(branch, match):
    with pytest.raises(ConfigError, match=match) as err:
        _method({"branches": [branch]})
    assert "method.params.branches" in str(err.value)


def test_a_program_that_does_not_fit_the_knowledge_fails_at_build():
    # the Gram matrices of 4 and 8 channels cannot be compared; pool needs feature maps, not logits
    with pytest.raises(ConfigError, match=r"branches.0: gram then l2 does not fit the knowledge"):
        _method({"branches": [{"knowledge": "features", "student": "features.3", "teacher": "features.3",
                               "transforms": ["gram"], "distance": "l2", "weight": 1}]})
    with pytest.raises(ConfigError, match=r"branches.0: pool then kl does not fit"):
        _method({"branches": [{"transforms": ["pool"], "distance": "kl", "weight": 1}]})
    with pytest.raises(ConfigError, match="method.params.branches.student"):
        _method({"branches": [{"knowledge": "features", "student": "nope", "teacher": "features.3",
                               "transforms": ["attention"], "distance": "l2", "weight": 1}]})
