"""MobileNetV2 for CIFAR (`mobilenetv2`, `mobile_half`) as RepDistiller models/mobilenetv2.py `mobilenetv2_T_w`.

`mobile_half` is the official MobileNetV2(T=6, W=0.5), the CRD/mdistiller student of vgg13 and resnet50. Module
names (`conv1.0`, `blocks.<stage>.<block>.conv.<i>`, `conv2.0`, `classifier.0`) match the official state dict.

Deviations from the official code: the stem takes the spec's channel count (officially 3); the final
`AvgPool2d(input_size // 16, ceil_mode=True)` is an `AdaptiveAvgPool2d(1)` (the same global average on the
official input sizes, multiples of 32, and usable on any other size, so the `input_size % 32` assert is gone);
`forward(x)` returns the logits only (no `is_feat` / `preact`: tap features by module path instead).
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveInt
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.models.cnn import image_channels, init_conv_bn
from kdforge.registry import MODELS

#: The official inverted-residual setting: (expansion or None for the official T, channels, blocks, stride).
SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
           (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))

#: A width multiplier, as `kdforge.models.build` validates it.
WidthMult = Annotated[float, Field(gt=0)]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """conv (no bias, 'same' padding)-BN-ReLU: the official `conv_bn` (3x3) and `conv_1x1_bn` (1x1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (linear); plus the input when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Stride-2 3x3 stem, seven stages of inverted residuals (`blocks`), 1x1 conv to 1280, global pool, linear."""

    def __init__(self, spec: DataSpec, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        if int(16 * width_mult) < 1:
            raise ValueError(f"width_mult {width_mult} leaves the 16-channel stage with no channels")
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(image_channels(spec), channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTING:
            out_channels = int(c * width_mult)
            stage = []
            for stride in [s] + [1] * (n - 1):
                stage.append(InvertedResidual(channels, out_channels, stride, expansion if t is None else t))
                channels = out_channels
            self.blocks.append(nn.Sequential(*stage))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(channels, self.last_channel, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, spec.num_classes))
        init_conv_bn(self)  # the official normal(0, sqrt(2 / (k * k * out_channels))) is kaiming fan_out
        nn.init.normal_(self.classifier[0].weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier[0].bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.classifier(self.avgpool(self.conv2(x)).flatten(1))


@MODELS.register("mobilenetv2")
def mobilenetv2(spec: DataSpec, width_mult: WidthMult = 0.5, expansion: PositiveInt = 6) -> nn.Module:
    """The official `mobilenetv2_T_w(T=expansion, W=width_mult)`; the defaults are `mobile_half`."""
    return MobileNetV2(spec, width_mult, expansion)


@MODELS.register("mobile_half")
def mobile_half(spec: DataSpec) -> nn.Module:
    """The official name of MobileNetV2(T=6, W=0.5): `mobilenetv2` with its defaults."""
    return MobileNetV2(spec)
