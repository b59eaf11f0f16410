"""What `build` makes of a data set: its own settings (the YAML's `data:` section, translated by the API)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kdforge.data.augment import AugmentSettings

DEFAULT_VAL_FRACTION = 0.1  # the schema's default too (a test keeps them equal)


@dataclass(frozen=True)
class LabelBudget:
    """Keep the labels of only part of the training split: a fraction (below 1) or a count (1 or more), stratified
    by class and cut from `seed`; the rest becomes the unlabeled part."""

    labeled: float
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labeled", float(self.labeled))


@dataclass(frozen=True)
class DataSettings:
    """What `build` makes: the registered data set `name` (with its `params`) from `root`, cut to subsets, a
    validation split and a label budget. `val_fraction` None means not given: the default share, or the data set's
    own validation split (which an explicit share would contradict). `augment` is checked against the inputs."""

    name: str
    root: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    train_subset: int | None = None
    test_subset: int | None = None
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    label_budget: LabelBudget | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
