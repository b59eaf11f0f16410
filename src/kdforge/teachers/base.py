"""The teacher-source contract: whatever gives a teacher's outputs for a batch, live or recorded."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

from kdforge.data.types import Batch


@dataclass
class TeacherOutput:
    """The teacher's logits on a batch's samples and the features of the paths a method asked for."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class TeacherSource(Protocol):
    """Gives teacher outputs for a batch, keyed by what identifies its view: `batch.split`, `batch.index` and
    `batch.params` (augmentation). A live source runs the model; a cache looks the outputs up, so it can replay
    the exact augmented view. Methods ask for features with `tap` at set-up, before the first `outputs`."""

    def tap(self, paths: Sequence[str]) -> None: ...
    def outputs(self, batch: Batch) -> TeacherOutput: ...
