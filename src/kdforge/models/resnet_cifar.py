"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4) as in RepDistiller models/resnet.py.

Module names follow the official ones, so state-dict keys and shapes are identical to RepDistiller/mdistiller's.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.models.cnn import conv3x3, image_channels, init_conv_bn
from kdforge.registry import MODELS

THIN = (16, 16, 32, 64)  # stem, stage 1, stage 2, stage 3 widths of resnet8 ... resnet110
WIDE = (32, 64, 128, 256)  # the "x4" variants


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN when the shape changes); ReLU after the sum.

    `preact` (an identity, no weights) marks the sum before that ReLU, so taps can take a stage's pre-activation
    output by path (`layer3.4.preact`), as RepDistiller's `preact` features give it to ReviewKD and OFD; the ReLU
    is therefore not in place.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.preact = nn.Identity()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu_()))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.preact(out + shortcut).relu()


class CifarResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of (depth - 2) / 6 basic blocks (strides 1, 2, 2), global pool, linear."""

    def __init__(self, depth: int, widths: Sequence[int], spec: DataSpec) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet's depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = conv3x3(image_channels(spec), widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = _stage(widths[0], widths[1], blocks, stride=1)
        self.layer2 = _stage(widths[1], widths[2], blocks, stride=2)
        self.layer3 = _stage(widths[2], widths[3], blocks, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)  # the official AvgPool2d(8) is this on 32x32 inputs
        self.fc = nn.Linear(widths[3], spec.num_classes)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(x)).relu_()
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    first = BasicBlock(in_channels, out_channels, stride)
    return nn.Sequential(first, *(BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)))


def _register(name: str, depth: int, widths: tuple[int, ...]) -> None:
    def builder(spec: DataSpec) -> nn.Module:
        return CifarResNet(depth, widths, spec)

    builder.__name__ = name
    MODELS.register(name)(builder)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, THIN)
for _depth in (8, 32):
    _register(f"resnet{_depth}x4", _depth, WIDE)
