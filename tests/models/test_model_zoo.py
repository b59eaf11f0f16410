"""Every registered model: forward shapes on the image/vector specs it supports, and official parameter counts."""
from __future__ import annotations

import pytest
import torch
from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError
from kdforge.models import MODELS, ModelSpec, build

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
SIGNAL_MODELS = {"cnn1d"}  # 1-D signals only: (L,) or (C, L)


def _forward(model: torch.nn.Module, spec: DataSpec) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, *spec.input_shape))


def test_registered_names() -> None:
    assert set(OFFICIAL_PARAMS) | {"mlp", "cnn", "cnn1d"} <= set(MODELS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name: str) -> None:
    model = build(ModelSpec(name=name), DataSpec("cifar100", (3, 32, 32), 100))
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]


NOT_FOR_IMAGES = {"gcn": "needs graph data", "sage": "needs graph data", "gat": "needs graph data", "textcnn": "needs token-id data", "bow": "needs token-id data",
                  "hf_bert": "needs token-id data"}


@pytest.mark.parametrize("spec", IMAGE_SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("name", sorted(set(MODELS) - set(NOT_FOR_IMAGES) - SIGNAL_MODELS))
def test_forward_shape_on_images(name: str, spec: DataSpec) -> None:
    assert _forward(build(ModelSpec(name=name), spec), spec).shape == (2, spec.num_classes)


@pytest.mark.parametrize("name", sorted(NOT_FOR_IMAGES))
def test_graph_and_text_models_refuse_images(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"student: model '{name}' .*{NOT_FOR_IMAGES[name]}"):
        build(ModelSpec(name=name), IMAGE_SPECS[0], key_path="student")


def test_mlp_on_vectors() -> None:
    model = build(ModelSpec(name="mlp", params={"hidden": [64], "dropout": 0.1}), VECTOR_SPEC)
    assert _forward(model, VECTOR_SPEC).shape == (2, 10)


@pytest.mark.parametrize("name", ["cnn", "resnet8", "wrn_16_2", "vgg8"])
def test_image_models_reject_vectors(name: str) -> None:
    with pytest.raises(ConfigError, match=r"teacher\.model: .*needs image inputs \(C, H, W\), got input shape \(40,\)"):
        build(ModelSpec(name=name), VECTOR_SPEC, key_path="teacher.model")


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
        assert _forward(build(ModelSpec(name="cnn", params=params), spec), spec).shape == (2, 10)


def test_wrn_dropout_is_active_in_training_only() -> None:
    spec = IMAGE_SPECS[2]
    model = build(ModelSpec(name="wrn_16_2", params={"dropout": 0.5}), spec)
    x = torch.randn(4, *spec.input_shape)
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_cnn1d_default_is_mnist1d_convbase() -> None:
    """greydanus/mnist1d notebooks/models.py ConvBase: 150 + 1,900 + 1,900 conv + 1,260 linear parameters."""
    model = build(ModelSpec(name="cnn1d"), VECTOR_SPEC)
    assert sum(p.numel() for p in model.parameters()) == 5_210
    convs = [model.features.conv1, model.features.conv2, model.features.conv3]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 25, (5,), (2,), (1,)),
        (25, 25, (3,), (2,), (1,)),
        (25, 25, (3,), (2,), (1,)),
    ]
    assert (model.fc.in_features, model.fc.out_features) == (125, 10)
    assert _forward(model, VECTOR_SPEC).shape == (2, 10)


def test_cnn1d_layers_can_be_tapped_by_module_path() -> None:
    names = dict(build(ModelSpec(name="cnn1d"), VECTOR_SPEC).named_modules())
    assert {"features", "features.conv1", "features.relu3", "flatten", "fc"} <= set(names)


@pytest.mark.parametrize(
    ("spec", "params", "fc_in"),
    [
        (VECTOR_SPEC, {"channels": 128}, 128 * 5),
        (VECTOR_SPEC, {"channels": 8, "kernel_sizes": [3, 3]}, 8 * 10),
        (DataSpec("signals", (3, 100), 4), {"channels": 16, "stride": 1, "kernel_sizes": [3]}, 16 * 100),
    ],
)
def test_cnn1d_configurations(spec: DataSpec, params: dict, fc_in: int) -> None:
    model = build(ModelSpec(name="cnn1d", params=params), spec)
    assert model.fc.in_features == fc_in
    assert _forward(model, spec).shape == (2, spec.num_classes)


@pytest.mark.parametrize("spec", IMAGE_SPECS, ids=lambda s: s.name)
def test_cnn1d_rejects_images(spec: DataSpec) -> None:
    expected = r"^student: .*needs 1-D signal inputs \(L,\) or \(C, L\), got tensor input shape"
    with pytest.raises(ConfigError, match=expected):
        build(ModelSpec(name="cnn1d"), spec, key_path="student")


def test_cnn1d_too_short_input_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"input length 2 is too short for conv1"):
        build(ModelSpec(name="cnn1d"), DataSpec("short", (2,), 2))


def test_cnn1d_rejects_bad_params() -> None:
    with pytest.raises(ConfigError, match=r"model\.params\.kernel_sizes: .*at least 1"):
        build(ModelSpec(name="cnn1d", params={"kernel_sizes": []}), VECTOR_SPEC)
    with pytest.raises(ConfigError, match=r"model\.params\.channels: .*greater than 0"):
        build(ModelSpec(name="cnn1d", params={"channels": 0}), VECTOR_SPEC)
