"""FitNet from a config: connectors built from tapped shapes, the hint stage, export without the connector."""
import pytest
import torch
from torch import nn

import kdforge
import kdforge.models as models
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.methods.connectors import ConvReg, connector
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher
from support import SHARED


@pytest.mark.parametrize("s_shape,t_shape,kind", [
    ((16, 8, 8), (64, 8, 8), nn.Conv2d),            # same size: 1x1 conv
    ((16, 16, 16), (64, 8, 8), nn.Conv2d),          # twice the size: 3x3 stride 2
    ((16, 4, 4), (64, 8, 8), nn.ConvTranspose2d),   # half the size: 4x4 transposed, stride 2
    ((16, 10, 10), (64, 7, 7), nn.Conv2d),          # larger: valid conv of kernel 4
    ((25, 5), (64, 5), nn.Conv1d),                  # 1-D maps
])
def test_connector_maps_student_shape_to_teacher_shape(s_shape, t_shape, kind):
    c = connector(s_shape, t_shape)
    assert isinstance(c, ConvReg) and isinstance(c.conv, kind)
    assert tuple(c(torch.randn(2, *s_shape)).shape[1:]) == t_shape


def test_vector_connector_and_impossible_shapes():
    assert tuple(connector((32,), (128,))(torch.randn(2, 32)).shape) == (2, 128)
    with pytest.raises(ValueError, match="different ranks"):
        connector((16, 4, 4), (64,))
    with pytest.raises(ValueError, match="no connector"):
        connector((16, 3, 3), (64, 5, 5))


def _fitnet(digits, **params):
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="cnn", params={"channels": [16, 32]}), digits.spec)
    student = models.build(ModelSpec(name="cnn", params={"channels": [4, 8], "hidden": 16}), digits.spec)
    cfg = MethodSpec(name="fitnet", params={"student_layer": "features.6", "teacher_layer": "features.6", **params})
    return build_method(cfg, student, LiveTeacher(teacher), Setup.for_data(digits.spec, digits.train)), student


def test_connector_is_built_from_tapped_shapes_and_trained_with_the_student(digits):
    method, student = _fitnet(digits)
    assert isinstance(method.connector.conv, nn.Conv2d) and method.connector.conv.in_channels == 8
    assert method.connector.conv.out_channels == 32
    keys = method.trainable().state_dict()
    assert any(k.startswith("connector.") for k in keys) and not any(k.startswith("teacher") for k in keys)
    logits, terms = method.loss_terms(digits.train.batch(torch.arange(16)), None)
    assert set(terms) == {"ce", "hint"} and logits.shape == (16, 10)
    sum(terms.values()).backward()
    assert method.connector.conv.weight.grad is not None


def test_bad_layer_paths_name_the_key(digits):
    with pytest.raises(ConfigError, match=r"method\.params\.student_layer: no module 'features\.60'"):
        _fitnet(digits, student_layer="features.60")
    with pytest.raises(ConfigError, match=r"method\.params\.teacher_layer: no module 'layer2'"):
        _fitnet(digits, teacher_layer="layer2")


def test_hint_stage_trains_only_up_to_the_guided_layer(digits, tmp_path):
    """Stage 1 (hint alone) must leave the student's head untouched: it has no gradient from the hint."""
    method, student = _fitnet(digits, hint_epochs=1)
    head = {k: v.clone() for k, v in student.head.state_dict().items()}
    first = {k: v.clone() for k, v in student.features[0].state_dict().items()}
    from kdforge.data import Batches
    from kdforge.engine import Trainer

    recipe = Recipe(optim=OptimSettings(lr=0.05), train=LoopSettings(epochs=1, progress=False, tensorboard=False))
    result = Trainer(method, Batches(digits, 64), recipe, tmp_path).fit()
    assert set(result.history[0]) >= {"hint"} and "ce" not in result.history[0]
    assert all(torch.equal(head[k], v) for k, v in student.head.state_dict().items())
    assert not torch.equal(first["weight"], student.features[0].weight)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
def test_fitnet_config_runs_and_exports_the_student_alone(tmp_path, teacher_store):
    # the session's teacher store: cli/test_end_to_end.py distills from the same teacher (data, model and recipe)
    cfg = kdforge.load_config("configs/fashion_mnist_fitnet.yaml", [
        "data.train_subset=6000", "data.test_subset=1000", "train.epochs=3", "teacher.recipe.train.epochs=2",
        f"teacher.store_dir={teacher_store}", f"output_dir={tmp_path / 'run'}", "train.progress=false",
        "teacher.recipe.train.progress=false"])
    summary = kdforge.run(cfg)
    assert summary["test"]["top1"] > 0.6
    import json
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    hints = [e["hint"] for e in epochs if e["event"] == "epoch"]
    assert hints[-1] < 0.5 * hints[0]  # the regressor learns to match the teacher's hint
    saved = kdforge.load_model(tmp_path / "run" / "student")
    assert sum(p.numel() for p in saved.parameters()) == summary["student"]["params"]
