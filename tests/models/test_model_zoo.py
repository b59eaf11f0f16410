"""Every registered model: forward shapes on the image/vector specs it supports, and official parameter counts."""
from __future__ import annotations

import pytest
import torch

from kdforge.config.schema import ModelConfig
from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError
from kdforge.models import MODELS, build

# Parameter counts on a 3x32x32, 100-class spec, computed by instantiating the official definitions
# (HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403 models/resnet.py, models/wrn.py,
# models/vgg.py `vgg8_bn`/`vgg13_bn`; megvii-research/mdistiller@a08d46f1 mdistiller/models/cifar/ gives the same).
OFFICIAL_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
}
IMAGE_SPECS = [
    DataSpec("cifar10", (3, 32, 32), 10),
    DataSpec("fashion_mnist", (1, 28, 28), 10),
    DataSpec("digits", (1, 8, 8), 10),
]
VECTOR_SPEC = DataSpec("mnist1d", (40,), 10)


def _forward(model: torch.nn.Module, spec: DataSpec) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, *spec.input_shape))


def test_registered_names() -> None:
    assert set(OFFICIAL_PARAMS) | {"mlp", "cnn"} <= set(MODELS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name: str) -> None:
    model = build(ModelConfig(name=name), DataSpec("cifar100", (3, 32, 32), 100))
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


NOT_FOR_IMAGES = {"gcn": "needs graph data", "textcnn": "needs token-id data", "bow": "needs token-id data"}


@pytest.mark.parametrize("spec", IMAGE_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("name", sorted(set(MODELS) - set(NOT_FOR_IMAGES)))
def test_forward_shape_on_images(name: str, spec: DataSpec) -> None:
    assert _forward(build(ModelConfig(name=name), spec), spec).shape == (2, spec.num_classes)


@pytest.mark.parametrize("name", sorted(NOT_FOR_IMAGES))
def test_graph_and_text_models_refuse_images(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"student: model '{name}' .*{NOT_FOR_IMAGES[name]}"):
        build(ModelConfig(name=name), IMAGE_SPECS[0], key_path="student")


def test_mlp_on_vectors() -> None:
    model = build(ModelConfig(name="mlp", params={"hidden": [64], "dropout": 0.1}), VECTOR_SPEC)
    assert _forward(model, VECTOR_SPEC).shape == (2, 10)


@pytest.mark.parametrize("name", ["cnn", "resnet8", "wrn_16_2", "vgg8"])
def test_image_models_reject_vectors(name: str) -> None:
    with pytest.raises(ConfigError, match=r"teacher\.model: .*needs image inputs \(C, H, W\), got input shape \(40,\)"):
        build(ModelConfig(name=name), VECTOR_SPEC, key_path="teacher.model")


@pytest.mark.parametrize(
    "params",
    [
        {"channels": [64, 128], "hidden": 256},  # Fashion-MNIST teacher
        {"channels": [8, 16], "hidden": 32, "dropout": 0.2},  # Fashion-MNIST student
        {"channels": [4, 4, 4, 4, 4], "pool_size": 1},  # more blocks than 2x2 max-pools fit in 8x8
    ],
)
def test_cnn_configurations(params: dict) -> None:
    for spec in IMAGE_SPECS[1:]:
        assert _forward(build(ModelConfig(name="cnn", params=params), spec), spec).shape == (2, 10)


def test_wrn_dropout_is_active_in_training_only() -> None:
    spec = IMAGE_SPECS[2]
    model = build(ModelConfig(name="wrn_16_2", params={"dropout": 0.5}), spec)
    x = torch.randn(4, *spec.input_shape)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
