"""What a training run gives back (`FitResult`, per-split `Metrics`) and the two callables a caller may hand the
trainer (an epoch callback, extra metrics on each evaluation)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

EpochCallback = Callable[[int, dict[str, Any]], None]
#: (split name, the model's logits on it) -> extra metrics, e.g. agreement with a teacher's logits.
ExtraMetrics = Callable[[str, Tensor], dict[str, float]]


class Metrics(dict[str, float]):
    """Metrics of one split; when the split was not given it is empty and its `note` (and any lookup) says so."""

    def __init__(self, values: dict[str, float] | None = None, note: str = "") -> None:
        super().__init__(values or {})
        self.note = note

    def __missing__(self, key: str) -> float:
        raise KeyError(f"{key!r}: {self.note}" if self.note else key)

    def __repr__(self) -> str:
        return f"Metrics({self.note})" if self.note and not self else super().__repr__()


@dataclass
class FitResult:
    val: Metrics
    test: Metrics
    epochs: int
    steps: int
    wall_time_s: float
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
