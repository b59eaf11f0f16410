"""Connectors: trainable maps from a student feature's shape to a teacher feature's, built from tapped shapes.

Shared by every feature method, so they are written once. They live in the method (trained and checkpointed
with the student) and are dropped at export.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvReg(nn.Module):
    """RepDistiller's `ConvReg` (models/util.py, for FitNet) for maps of 1 or 2 spatial dims: conv, BN, ReLU.

    Spatial size: student 2x the teacher's -> 3x3 conv with stride 2; half -> 4x4 transposed conv with stride 2;
    larger or equal -> a valid conv of kernel 1 + (s - t), which is a 1x1 conv when the sizes match.
    """

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], use_relu: bool = True) -> None:
        super().__init__()
        dims = len(s_shape) - 1
        conv, tconv, norm = (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d) if dims == 1 else \
            (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)
        (s_c, *s_size), (t_c, *t_size) = s_shape, t_shape
        if s_size[0] == 2 * t_size[0]:
            self.conv: nn.Module = conv(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif s_size[0] * 2 == t_size[0]:
            self.conv = tconv(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif all(s >= t for s, t in zip(s_size, t_size)):
            self.conv = conv(s_c, t_c, kernel_size=tuple(1 + s - t for s, t in zip(s_size, t_size)))
        else:
            raise ValueError(f"no connector from student feature {s_shape} to teacher feature {t_shape}")
        self.bn = norm(t_c)
        self.use_relu = use_relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return x.relu() if self.use_relu else x


def connector(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> nn.Module:
    """A map from features of shape `s_shape` to `t_shape` (without batch): Linear for vectors, ConvReg for
    maps [C, L] or [C, H, W]; a ValueError for shapes of different rank or no known map."""
    if len(s_shape) != len(t_shape):
        raise ValueError(f"student feature {s_shape} and teacher feature {t_shape} have different ranks")
    if len(s_shape) == 1:
        return nn.Linear(s_shape[0], t_shape[0])
    if len(s_shape) in (2, 3):
        return ConvReg(s_shape, t_shape)
    raise ValueError(f"no connector for features of shape {s_shape}")


class Embed(nn.Module):
    """RepDistiller's CRD `Embed` (crd/criterion.py L79-102 @b84f547): flatten, Linear to `dim_out`, L2-normalize
    each row (x / ||x||_2, no epsilon, as the official `Normalize`)."""

    def __init__(self, dim_in: int, dim_out: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.reshape(x.shape[0], -1))
        return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


class ABF(nn.Module):
    """ReviewKD's attention-based fusion (Chen et al., CVPR 2021, Sec. 3.2 and Fig. 3c; module names and
    initialisation as the official `ABF`): a 1x1 conv-BN maps the student feature to `mid` channels; when there
    is a deeper residual (`fuse`), it is resized to this feature's size (nearest) and the two are blended with
    two per-pixel weights from a 1x1 conv + sigmoid over both; the result is resized to the teacher's size and a
    3x3 conv-BN maps it to the teacher's channels. Returns (output for the loss, residual for the next,
    shallower stage: the fused map at the teacher's size)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            assert residual is not None, "a fusing ABF needs the deeper stage's residual"
            residual = F.interpolate(residual, x.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, :1] + residual * z[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x  # the residual is taken after the resize, as in the official code
