"""VID from a config: one regressor and variance per layer pair, built from tapped shapes, trained, its terms."""
import pytest
import torch
from torch import nn

import kdforge.models as models
from kdforge.errors import ConfigError
from kdforge.losses import vid_nll
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.methods.vid import VIDRegressor
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher


def _vid(digits, **params):
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="cnn", params={"channels": [16, 32]}), digits.spec)
    student = models.build(ModelSpec(name="cnn", params={"channels": [4, 8], "hidden": 16}), digits.spec)
    params = {"student_layers": ["features.3", "features.7"], "teacher_layers": ["features.3", "features.7"],
              **params}
    return build_method(MethodSpec(name="vid", params=params), student, LiveTeacher(teacher),
                        Setup.for_data(digits.spec, digits.train)), student, teacher


def test_regressors_from_tapped_shapes_init_variance_and_terms(digits):
    method, student, teacher = _vid(digits)
    assert len(method.regressors) == 2
    first = method.regressors[0].regressor
    assert [(c.in_channels, c.out_channels) for c in first if isinstance(c, nn.Conv2d)] == [(4, 16), (16, 16), (16, 16)]
    assert all(c.bias is None for c in first if isinstance(c, nn.Conv2d))
    var = torch.nn.functional.softplus(method.regressors[1].log_scale) + 1e-5
    assert var.shape == (32,) and torch.allclose(var, torch.full((32,), 5.0))
    keys = method.trainable().state_dict()
    assert "regressors.1.log_scale" in keys and not any(k.startswith("teacher") for k in keys)

    batch = digits.train.batch(torch.arange(16))
    logits, terms = method.loss_terms(batch, None)
    assert set(terms) == {"ce", "vid"}
    feats = {}
    student.features[3].register_forward_hook(lambda m, i, o: feats.setdefault("s3", o))
    student.features[7].register_forward_hook(lambda m, i, o: feats.setdefault("s7", o))
    teacher.features[3].register_forward_hook(lambda m, i, o: feats.setdefault("t3", o))
    teacher.features[7].register_forward_hook(lambda m, i, o: feats.setdefault("t7", o))
    student(batch.x)
    with torch.no_grad():
        teacher.eval()(batch.x)
    expected = sum(vid_nll(r.regressor(feats[f"s{i}"]), torch.nn.functional.softplus(r.log_scale) + 1e-5,
                           feats[f"t{i}"]) for r, i in zip(method.regressors, (3, 7)))
    assert torch.allclose(terms["vid"], expected)
    sum(terms.values()).backward()
    assert method.regressors[0].log_scale.grad is not None and student.features[0].weight.grad is not None


def test_pools_the_larger_map_and_handles_vectors():
    reg = VIDRegressor((4, 8, 8), (6, 4, 4))
    mean, var, target = reg(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4))
    assert mean.shape == target.shape == (2, 6, 4, 4) and var.shape == (6,)
    t = torch.randn(2, 6, 8, 8)
    _, _, target = VIDRegressor((4, 4, 4), (6, 8, 8))(torch.randn(2, 4, 4, 4), t)
    assert torch.allclose(target, torch.nn.functional.avg_pool2d(t, 2))
    mean, var, target = VIDRegressor((5,), (3,))(torch.randn(2, 5), torch.randn(2, 3))
    assert mean.shape == target.shape == (2, 3, 1, 1)


def test_weights_and_bad_params(digits):
    method, _, _ = _vid(digits, vid_weight=0.0, kd_weight=0.5)
    logits, terms = method.loss_terms(digits.train.batch(torch.arange(8)), None)
    assert set(terms) == {"ce", "kd", "vid"} and terms["vid"] == 0
    with pytest.raises(ConfigError, match="pair up"):
        _vid(digits, teacher_layers=["features.7"])
    with pytest.raises(ConfigError, match=r"method\.params\.student_layers: no module 'features\.70'"):
        _vid(digits, student_layers=["features.3", "features.70"])
