"""The data contract shared by every stage: splits held as tensors, the batches drawn from them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about a data set: input shape (without batch) and class count."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass
class Split:
    """One split in memory: float32 inputs (already normalized) and int64 labels."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataBundle:
    spec: DataSpec
    train: Split
    val: Split
    test: Split


@dataclass
class Batch:
    """A training batch.

    `y` holds the hard labels of the drawn samples; `target` is the label distribution after mixup/cutmix
    (None when no mixing happened). `index` is each sample's position in the training split and `params`
    the augmentation parameters, so that a teacher-output cache can replay exactly this view.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    target: Tensor | None = None
    params: dict[str, Tensor] = field(default_factory=dict)

    @property
    def labels(self) -> Tensor:
        """What the hard-label loss should fit: the mixed distribution if any, else the class indices."""
        return self.y if self.target is None else self.target

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            x=self.x.to(device, non_blocking=True),
            y=self.y.to(device, non_blocking=True),
            index=self.index,
            target=None if self.target is None else self.target.to(device, non_blocking=True),
            params=self.params,
        )
