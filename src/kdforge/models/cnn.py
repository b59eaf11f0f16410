"""Conv pieces shared by the zoo (image check, conv3x3, conv-BN, init) and `cnn`, a small net for 28x28/8x8 images."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field, PositiveInt
from torch import nn

from kdforge.data.types import DataSpec
from kdforge.models.mlp import Dropout, mlp_head
from kdforge.registry import MODELS


def image_channels(spec: DataSpec) -> int:
    """The channel count C of an image spec (C, H, W); a ValueError for any other input shape."""
    if len(spec.input_shape) != 3:
        raise ValueError(f"needs image inputs (C, H, W), got input shape {spec.input_shape}")
    return spec.input_shape[0]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1, as in RepDistiller models/resnet.py `conv3x3`."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv_bn(in_channels: int, out_channels: int, bias: bool = False) -> list[nn.Module]:
    """[conv3x3, BatchNorm2d]: the pair VGG and `cnn` stack, each followed by a ReLU."""
    return [conv3x3(in_channels, out_channels, bias=bias), nn.BatchNorm2d(out_channels)]


def init_conv_bn(model: nn.Module) -> None:
    """RepDistiller's init: conv weights kaiming-normal (fan_out, ReLU), conv biases 0, BatchNorm weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_blocks(in_channels: int, channels: Sequence[int], size: int) -> nn.Sequential:
    """conv-BN-ReLU per width, each followed by a 2x2 max-pool while the spatial side `size` is at least 2."""
    layers: list[nn.Module] = []
    for width in channels:
        layers += [*conv_bn(in_channels, width), nn.ReLU(inplace=True)]
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        in_channels = width
    return nn.Sequential(*layers)


@MODELS.register("cnn")
def cnn(
    spec: DataSpec,
    channels: Annotated[Sequence[PositiveInt], Field(min_length=1)] = (32, 64),
    hidden: PositiveInt = 128,
    dropout: Dropout = 0.0,
    pool_size: PositiveInt = 2,
) -> nn.Module:
    """Conv blocks, an adaptive average pool to `pool_size` x `pool_size`, then a one-hidden-layer MLP head."""
    features = _conv_blocks(image_channels(spec), channels, min(spec.input_shape[1:]))
    head = mlp_head(channels[-1] * pool_size**2, [hidden], spec.num_classes, dropout)
    model = nn.Sequential(
        OrderedDict(features=features, pool=nn.AdaptiveAvgPool2d(pool_size), flatten=nn.Flatten(), head=head)
    )
    init_conv_bn(model)
    return model
