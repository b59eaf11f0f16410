"""The mobile CIFAR students (mobilenetv2 / mobile_half, shufflenetv1, shufflenetv2): official parameter counts
and state-dict names, logits for 100 and 10 classes, features by module path."""
from __future__ import annotations

import pytest
import torch
from kdforge.data.types import Batch, DataSpec
from kdforge.errors import ConfigError
from kdforge.models import MODELS, ModelSpec, build
from kdforge.models.taps import Taps

CIFAR100 = DataSpec("cifar100", (3, 32, 32), 100)
CIFAR10 = DataSpec("cifar10", (3, 32, 32), 10)

# (parameters, state-dict entries) on a 3x32x32, 100-class spec, computed by instantiating the official definitions
# (HobbitLong/RepDistiller@b84f547c5db6a35318d4671d7d5c4de74c822403 models/mobilenetv2.py `mobile_half(100)`,
# models/ShuffleNetv1.py `ShuffleV1(num_classes=100)`, models/ShuffleNetv2.py `ShuffleV2(num_classes=100)`) in a
# scratch script; megvii-research/mdistiller mdistiller/models/cifar/ defines the same modules. For 10 classes the
# official counts are 697,546 / 862,768 / 1,263,278. The state-dict keys were checked equal, in order and shape,
# and the logits equal after loading the official state dict.
OFFICIAL = {
    "mobilenetv2": (812_836, 320),
    "mobile_half": (812_836, 320),
    "shufflenetv1": (949_258, 296),
    "shufflenetv2": (1_355_528, 338),
}
OFFICIAL_10 = {"mobilenetv2": 697_546, "mobile_half": 697_546, "shufflenetv1": 862_768, "shufflenetv2": 1_263_278}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _batch(n: int = 2) -> Batch:
    return Batch(x=torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), y=None,
                 index=torch.arange(n))


def test_registered_names() -> None:
    assert set(OFFICIAL) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_parameter_count_and_state_dict_size_equal_official(name: str) -> None:
    model = build(ModelSpec(name=name), CIFAR100)
    assert (_params(model), len(model.state_dict())) == OFFICIAL[name]
    assert _params(build(ModelSpec(name=name), CIFAR10)) == OFFICIAL_10[name]


@pytest.mark.parametrize("spec", [CIFAR100, CIFAR10], ids=lambda s: s.name)
@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_forward_gives_logits(name: str, spec: DataSpec) -> None:
    model = build(ModelSpec(name=name), spec)
    logits = model(_batch().x)  # train mode: BatchNorm on a batch of 2
    assert logits.shape == (2, spec.num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# A few official state-dict names and shapes (100 classes; read off the official models in the same scratch
# script); the grouped convs' second dimension is in / groups.
OFFICIAL_KEYS = {
    "mobilenetv2": {
        "conv1.0.weight": (16, 3, 3, 3),
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1),  # first stage: expansion 1
        "blocks.1.0.conv.3.weight": (48, 1, 3, 3),  # depthwise over 8 * 6 channels
        "blocks.6.0.conv.7.running_var": (160,),
        "conv2.0.weight": (1280, 160, 1, 1),
        "classifier.0.weight": (100, 1280),
    },
    "shufflenetv1": {
        "conv1.weight": (24, 3, 1, 1),
        "layer1.0.conv1.weight": (54, 24, 1, 1),  # not grouped after the stem
        "layer2.0.conv1.weight": (60, 80, 1, 1),  # 3 groups
        "layer2.0.conv3.weight": (240, 20, 1, 1),  # adds 480 - 240 planes to the pooled input
        "layer3.3.bn3.num_batches_tracked": (),
        "linear.weight": (100, 960),
    },
    "shufflenetv2": {
        "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer1.0.conv5.weight": (58, 58, 1, 1),
        "layer2.7.conv2.weight": (116, 1, 3, 3),
        "layer3.3.bn3.running_mean": (232,),
        "conv2.weight": (1024, 464, 1, 1),
        "linear.bias": (100,),
    },
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_KEYS))
def test_state_dict_uses_official_names(name: str) -> None:
    state = build(ModelSpec(name=name), CIFAR100).state_dict()
    assert {key: tuple(state[key].shape) for key in OFFICIAL_KEYS[name] if key in state} == OFFICIAL_KEYS[name]


# Stage outputs on 3x32x32 (channels, height, width), the official f0 ... f4 and the pooled feature.
STAGES = {
    "mobilenetv2": {"conv1": (16, 16, 16), "blocks.1": (12, 16, 16), "blocks.2": (16, 8, 8), "blocks.4": (48, 4, 4),
                    "blocks.6": (160, 2, 2), "conv2": (1280, 2, 2), "classifier:input": (1280,)},
    "shufflenetv1": {"bn1": (24, 32, 32), "layer1": (240, 16, 16), "layer2": (480, 8, 8), "layer3": (960, 4, 4),
                     "linear:input": (960,)},
    "shufflenetv2": {"bn1": (24, 32, 32), "layer1": (116, 16, 16), "layer2": (232, 8, 8), "layer3": (464, 4, 4),
                     "bn2": (1024, 4, 4), "linear:input": (1024,)},
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stages_can_be_tapped_by_module_path(name: str) -> None:
    model = build(ModelSpec(name=name), CIFAR100)
    taps = Taps(model, list(STAGES[name]))
    assert taps.shapes(_batch()) == STAGES[name]
    assert model.training  # shapes() restores the mode
    x = _batch().x
    with taps.capture() as feats:
        logits = model(x)
    assert logits.shape == (2, 100)
    head = next(path for path in STAGES[name] if path.endswith(":input")).removesuffix(":input")
    assert torch.allclose(model.get_submodule(head)(feats[f"{head}:input"]), logits)


def test_mobilenetv2_in_place_relu_is_reported_on_a_tapped_batchnorm() -> None:
    """The official conv-BN-ReLU blocks use in-place ReLUs: the BN output is not kept, the ReLU's is."""
    model = build(ModelSpec(name="mobile_half"), CIFAR100)
    with pytest.raises(ConfigError, match=r"'conv1\.1' was changed in place"):
        Taps(model, ["conv1.1"]).shapes(_batch())
    assert Taps(model, ["conv1.2", "blocks.3.0.conv.7"]).shapes(_batch()) == {
        "conv1.2": (16, 16, 16), "blocks.3.0.conv.7": (32, 4, 4)}


def test_mobilenetv2_params() -> None:
    """width_mult and expansion are the official W and T (counts from the official `mobilenetv2_T_w(T, W, 100)`)."""
    full = build(ModelSpec(name="mobilenetv2", params={"width_mult": 1.0, "expansion": 6}), CIFAR100)
    assert _params(full) == 2_353_060
    assert _params(build(ModelSpec(name="mobilenetv2", params={"width_mult": 0.75, "expansion": 4}), CIFAR100)) \
        == 1_131_124
    assert full(_batch().x).shape == (2, 100)
    with pytest.raises(ConfigError, match=r"model\.params\.width_mult: .*greater than 0"):
        build(ModelSpec(name="mobilenetv2", params={"width_mult": 0}), CIFAR100)
    with pytest.raises(ConfigError, match=r"model\.params\.expansion: .*valid integer"):
        build(ModelSpec(name="mobilenetv2", params={"expansion": 1.5}), CIFAR100)
    with pytest.raises(ConfigError, match=r"width_mult 0\.01 leaves the 16-channel stage with no channels"):
        build(ModelSpec(name="mobilenetv2", params={"width_mult": 0.01}), CIFAR100)
    with pytest.raises(ConfigError, match=r"model\.params\.width_mult: unknown parameter of model 'mobile_half'"):
        build(ModelSpec(name="mobile_half", params={"width_mult": 1.0}), CIFAR100)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_small_grayscale_images(name: str) -> None:
    """The stem takes the spec's channels and the global pool any size (the official code is 3x32x32 only)."""
    for spec in (DataSpec("fashion_mnist", (1, 28, 28), 10), DataSpec("digits", (1, 8, 8), 10)):
        with torch.no_grad():
            assert build(ModelSpec(name=name), spec)(torch.randn(2, *spec.input_shape)).shape == (2, 10)


@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenetv1", "shufflenetv2"])
def test_vectors_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"student: .*needs image inputs \(C, H, W\)"):
        build(ModelSpec(name=name), DataSpec("mnist1d", (40,), 10), key_path="student")
