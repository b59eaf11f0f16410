"""Wide ResNets (wrn_16_2, wrn_40_1, wrn_40_2) as in RepDistiller models/wrn.py (pre-activation blocks).

Module names follow the official ones (`block1.layer.0.convShortcut`, ...), so state-dict keys are identical.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.models.cnn import conv3x3, image_channels, init_conv_bn
from kdforge.models.mlp import Dropout
from kdforge.registry import MODELS


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-dropout-conv3x3, plus a shortcut: the input, or a 1x1 conv of the activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.dropout = dropout
        self.convShortcut: nn.Module | None = None  # the official name, kept for checkpoint compatibility
        if stride != 1 or in_channels != out_channels:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        out = self.conv2(F.dropout(out, self.dropout, self.training))
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class WideStage(nn.Module):
    """`blocks` wide blocks; the first one changes width and stride (the official `NetworkBlock`)."""

    def __init__(self, blocks: int, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        first = WideBlock(in_channels, out_channels, stride, dropout)
        rest = (WideBlock(out_channels, out_channels, 1, dropout) for _ in range(blocks - 1))
        self.layer = nn.Sequential(first, *rest)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """conv3x3 stem (16), three stages of (depth - 4) / 6 wide blocks (16k, 32k, 64k), BN-ReLU, global pool, linear."""

    def __init__(self, depth: int, widen: int, spec: DataSpec, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a wide ResNet's depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv3x3(image_channels(spec), widths[0])
        self.block1 = WideStage(blocks, widths[0], widths[1], 1, dropout)
        self.block2 = WideStage(blocks, widths[1], widths[2], 2, dropout)
        self.block3 = WideStage(blocks, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)  # the official avg_pool2d(8) is this on 32x32 inputs
        self.fc = nn.Linear(widths[3], spec.num_classes)
        init_conv_bn(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(F.relu(self.bn1(x))).flatten(1))


@MODELS.register("wrn_16_2")
def wrn_16_2(spec: DataSpec, dropout: Dropout = 0.0) -> nn.Module:
    return WideResNet(16, 2, spec, dropout)


@MODELS.register("wrn_40_1")
def wrn_40_1(spec: DataSpec, dropout: Dropout = 0.0) -> nn.Module:
    return WideResNet(40, 1, spec, dropout)


@MODELS.register("wrn_40_2")
def wrn_40_2(spec: DataSpec, dropout: Dropout = 0.0) -> nn.Module:
    return WideResNet(40, 2, spec, dropout)
