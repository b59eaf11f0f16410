"""The teacher-source contract: whatever gives a teacher's outputs for a batch, live or recorded."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor, nn

from kdforge.data.types import Batch

if TYPE_CHECKING:
    from kdforge.teachers.cache import CacheSettings


@dataclass
class TeacherOutput:
    """The teacher's logits on a batch's samples and the features of the paths a method asked for."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class TeacherSource(Protocol):
    """Gives teacher outputs for a batch, keyed by what identifies its view: `batch.split`, `batch.index`,
    `batch.params` (augmentation) and `batch.view_epoch` (a replayed recording). A live source runs the model; a
    cache looks the outputs up, so it can replay the exact augmented view. Methods ask for features with `tap` at
    set-up, before the first `outputs`.

    `network` is the teacher model the source runs on each batch (what a method that trains a copy of the teacher
    or steps through its later layers needs: DFA's search, ProKT's guide), or None for a source that does not run
    one (a cache replays recorded outputs).
    `release()` gives the model back as it was found (train/eval mode, hooks removed); the API calls it when a
    run ends. Every registered source is built by the API with `from_model(model, cache settings)`."""

    @property
    def network(self) -> nn.Module | None: ...
    def tap(self, paths: Sequence[str]) -> None: ...
    def outputs(self, batch: Batch) -> TeacherOutput: ...
    def release(self) -> nn.Module | None: ...
    @classmethod
    def from_model(cls, model: nn.Module, cache: "CacheSettings | None" = None) -> "TeacherSource": ...
