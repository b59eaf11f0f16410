"""ShuffleNet V1 and V2 for CIFAR (`shufflenetv1`, `shufflenetv2`) as RepDistiller models/ShuffleNetv1.py
`ShuffleV1` (out_planes 240/480/960, blocks 4/8/4, 3 groups) and models/ShuffleNetv2.py `ShuffleV2` (net_size 1).

These are the CRD/mdistiller students of resnet32x4 and wrn_40_2. Module names (`conv1`, `bn1`,
`layer<k>.<i>.conv<j>` / `bn<j>` / `shortcut` / `shuffle1` (V1) / `split`, `shuffle` (V2), `conv2`, `bn2` (V2),
`linear`) match the official state dict. Like the official code, the weights keep PyTorch's default init.

Deviations from the official code: the stem takes the spec's channel count (officially 3); the final
`avg_pool2d(out, 4)` is an `AdaptiveAvgPool2d(1)` module `avgpool` (the same on 32x32 inputs, whose last stage is
4x4, and usable on any other size); the last block of a stage returns its output only, not (output, pre-ReLU
output), and `forward(x)` returns the logits only (no `is_feat` / `preact`: tap features by module path instead).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.models.cnn import image_channels
from kdforge.registry import MODELS

STEM = 24  # the 1x1 stem's width in both versions
V1_OUT_PLANES, V1_BLOCKS, V1_GROUPS = (240, 480, 960), (4, 8, 4), 3  # the official `ShuffleV1` cfg
V2_OUT_CHANNELS, V2_BLOCKS = (116, 232, 464, 1024), (3, 7, 3)  # the official `configs[1]` (`ShuffleV2`)


class ShuffleBlock(nn.Module):
    """Channel shuffle: (N, g * c, H, W) -> (N, c, g, H, W) order, so grouped convs see every group's channels."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Bottleneck(nn.Module):
    """ShuffleNet V1 unit: grouped 1x1-BN-ReLU, shuffle, depthwise 3x3-BN-ReLU, grouped 1x1-BN; ReLU after the sum
    with the input, or (stride 2) after concatenating a 3x3 average pool of the input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        g = 1 if in_planes == STEM else groups  # the stem's output is not grouped (official rule)
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ShuffleBlock(g)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride, padding=1, groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(nn.Module):
    """1x1 stem (24)-BN-ReLU, three stages of bottlenecks (the first of each stride 2, widening by concatenation),
    global pool, linear."""

    def __init__(self, spec: DataSpec, out_planes: Sequence[int], num_blocks: Sequence[int], groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(image_channels(spec), STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        in_planes = STEM
        for k, (planes, blocks) in enumerate(zip(out_planes, num_blocks), 1):
            # the first block's output is concatenated with its pooled input, so it adds planes - in_planes
            stage = [Bottleneck(in_planes, planes - in_planes, 2, groups)]
            stage += [Bottleneck(planes, planes, 1, groups) for _ in range(blocks - 1)]
            self.add_module(f"layer{k}", nn.Sequential(*stage))
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x).flatten(1))


class SplitBlock(nn.Module):
    """The first `ratio` of the channels and the rest, as a pair."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = int(x.size(1) * self.ratio)
        return x[:, :c], x[:, c:]


class BasicBlock(nn.Module):
    """ShuffleNet V2 unit: split the channels in half, 1x1-BN-ReLU, depthwise 3x3-BN, 1x1-BN-ReLU on the second
    half, concatenate with the untouched first half, shuffle."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split = SplitBlock(split_ratio)
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock(2)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.split(x)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class DownBlock(nn.Module):
    """ShuffleNet V2 stride-2 unit: left, depthwise 3x3/2-BN then 1x1-BN-ReLU; right, 1x1-BN-ReLU, depthwise
    3x3/2-BN, 1x1-BN-ReLU; each half the output channels; concatenate, shuffle."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock(2)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """1x1 stem (24)-BN-ReLU, three stages of a down block and basic blocks, 1x1 conv-BN-ReLU, global pool,
    linear."""

    def __init__(self, spec: DataSpec, out_channels: Sequence[int], num_blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(image_channels(spec), STEM, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        in_channels = STEM
        for k, (channels, blocks) in enumerate(zip(out_channels[:3], num_blocks), 1):
            stage = [DownBlock(in_channels, channels), *(BasicBlock(channels) for _ in range(blocks))]
            self.add_module(f"layer{k}", nn.Sequential(*stage))
            in_channels = channels
        self.conv2 = nn.Conv2d(in_channels, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(self.avgpool(x).flatten(1))


@MODELS.register("shufflenetv1")
def shufflenetv1(spec: DataSpec) -> nn.Module:
    """The official `ShuffleV1`."""
    return ShuffleNetV1(spec, V1_OUT_PLANES, V1_BLOCKS, V1_GROUPS)


@MODELS.register("shufflenetv2")
def shufflenetv2(spec: DataSpec) -> nn.Module:
    """The official `ShuffleV2` (`ShuffleNetV2(net_size=1)`)."""
    return ShuffleNetV2(spec, V2_OUT_CHANNELS, V2_BLOCKS)
