"""`cnn1d`, a small 1-D CNN for signals of shape (L,) or (C, L); the default is MNIST-1D's ConvBase.

Default = greydanus/mnist1d notebooks/models.py `ConvBase` (Greydanus 2020, "Scaling down deep learning"):
Conv1d(1, 25, 5, stride 2, padding 1)-ReLU, Conv1d(25, 25, 3, 2, 1)-ReLU, Conv1d(25, 25, 3, 2, 1)-ReLU,
flatten (25 x 5 = 125 for L=40), Linear(125, classes); 5,210 parameters, PyTorch's default init as there,
drawn in the same order: a seed gives the official model's initial weights, and the same logits and gradients
(tests/models/test_cnn1d.py). No deviation in the model; the data set's CNN figure (94 %, README.md:78 @7878d96)
depends on the recipe: see configs/mnist1d_convbase.yaml and bench/mnist1d_convbase_official.py.
Modules are named `features.conv1` ... `features.convN` (each followed by `features.reluK`), `flatten`, `fc`,
so feature-distillation methods can tap them by module path.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field, NonNegativeInt, PositiveInt
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.registry import MODELS


def signal_shape(spec: DataSpec) -> tuple[int, int]:
    """(C, L) of a 1-D signal spec, (L,) read as C=1; a ValueError for images and non-tensor data."""
    shape = spec.input_shape
    if spec.kind != "tensor" or len(shape) not in (1, 2):
        raise ValueError(f"needs 1-D signal inputs (L,) or (C, L), got {spec.kind} input shape {shape}")
    return (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])


def conv_out_length(length: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a Conv1d (dilation 1); may be < 1 when the input is too short."""
    return (length + 2 * padding - kernel_size) // stride + 1


class CNN1d(nn.Module):
    """Conv1d-ReLU blocks (`features`), `flatten`, then a linear classifier `fc`; (B, L) or (B, C, L) in."""

    def __init__(self, in_channels: int, length: int, num_classes: int, channels: int,
                 kernel_sizes: Sequence[int], stride: int, padding: int) -> None:
        super().__init__()
        self.in_channels, self.length = in_channels, length
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        size, c_in = length, in_channels
        for i, k in enumerate(kernel_sizes, start=1):
            size = conv_out_length(size, k, stride, padding)
            if size < 1:
                raise ValueError(f"input length {length} is too short for conv{i} (kernel sizes {list(kernel_sizes)}, "
                                 f"stride {stride}, padding {padding}); use fewer or smaller convs")
            layers[f"conv{i}"] = nn.Conv1d(c_in, channels, k, stride=stride, padding=padding)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            c_in = channels
        self.features = nn.Sequential(layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], self.in_channels, self.length)
        return self.fc(self.flatten(self.features(x)))


@MODELS.register("cnn1d")
def cnn1d(
    spec: DataSpec,
    channels: PositiveInt = 25,
    kernel_sizes: Annotated[Sequence[PositiveInt], Field(min_length=1)] = (5, 3, 3),
    stride: PositiveInt = 2,
    padding: NonNegativeInt = 1,
) -> nn.Module:
    """One Conv1d(`channels`) per entry of `kernel_sizes`, all with `stride` and `padding`; a linear head."""
    in_channels, length = signal_shape(spec)
    return CNN1d(in_channels, length, spec.num_classes, channels, kernel_sizes, stride, padding)
