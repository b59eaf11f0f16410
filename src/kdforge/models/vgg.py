"""VGG with BatchNorm for CIFAR (vgg8, vgg13) as RepDistiller models/vgg.py `vgg8_bn` / `vgg13_bn`.

Five conv blocks, each a stack of conv(bias)-BN-ReLU; max-pools after blocks 0-2 (and 3 on 64x64 inputs), global
average pool, one linear layer. Module names (`block0` ... `block4`, `classifier`) match the official state dict.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.models.cnn import conv_bn, image_channels, init_conv_bn
from kdforge.registry import MODELS

VGG8 = ((64,), (128,), (256,), (512,), (512,))  # official cfg "S"
VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))  # official cfg "B"


class VGG(nn.Module):
    """One conv block per entry of `stages` (its conv widths), max-pools between them, global pool, linear."""

    def __init__(self, stages: Sequence[Sequence[int]], spec: DataSpec) -> None:
        super().__init__()
        self.num_blocks = len(stages)
        in_channels = image_channels(spec)
        for i, widths in enumerate(stages):
            self.add_module(f"block{i}", _block(in_channels, widths))
            in_channels = widths[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, spec.num_classes)
        init_conv_bn(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        pool_block3 = x.shape[-2] >= 64  # the official code pools after block 3 only for 64x64 inputs
        for i, block in enumerate(self.blocks()):
            x = F.relu(block(x))
            if i < 3 or (i == 3 and pool_block3):
                x = F.max_pool2d(x, 2)
        return self.classifier(self.pool(x).flatten(1))

    def blocks(self) -> list[nn.Module]:
        return [getattr(self, f"block{i}") for i in range(self.num_blocks)]


def _block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """conv-BN-ReLU per width, without the last ReLU (the forward applies it), as the official `_make_layers`."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [*conv_bn(in_channels, width, bias=True), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


@MODELS.register("vgg8")
def vgg8(spec: DataSpec) -> nn.Module:
    return VGG(VGG8, spec)


@MODELS.register("vgg13")
def vgg13(spec: DataSpec) -> nn.Module:
    return VGG(VGG13, spec)
