"""The engine's own settings: small frozen dataclasses, what `Trainer`, `Plan`, `build_optimizer`,
`build_scheduler` and a method's `optimization()` read. The API fills them from an experiment's YAML sections
(`kdforge.api.settings`, the one translation); code that drives the engine directly builds them by hand. Their
defaults are the schema's (a test keeps the two equal); the schema validates ranges, these only check names.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from kdforge.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle", "linear")
PRECISIONS = ("fp32", "bf16", "fp16")


def _one_of(kind: str, name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ConfigError(f"{kind}.name: {name!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class OptimSettings:
    """`sgd` (momentum, nesterov, L2 weight decay), `adam` (L2 added to the gradient) or `adamw` (decoupled);
    `no_decay_norm_bias`: weight decay 0 on normalisation layers' weights and on every bias (two param groups)."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    no_decay_norm_bias: bool = False

    def __post_init__(self) -> None:
        _one_of("optim", self.name, OPTIMIZERS)


@dataclass(frozen=True)
class ScheduleSettings:
    """Per-step learning-rate schedule, defined in epochs (see `kdforge.engine.optim.lr_factor`)."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    step_size: int = 30
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _one_of("schedule", self.name, SCHEDULES)
        object.__setattr__(self, "milestones", tuple(self.milestones))


@dataclass(frozen=True)
class LoopSettings:
    """The loop: epochs, clipping, precision and gradient accumulation, how often it validates, logs and
    checkpoints (none of which changes the numbers), where it runs, and what it shows."""

    epochs: int = 10
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    precision: str = "fp32"
    accumulate: int = 1
    eval_every: int = 5
    log_every: int = 50
    checkpoint_every: int = 1
    checkpoint_steps: int | None = None
    eval_test: bool = False
    device: str = "auto"
    sync_batchnorm: bool = False
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.accumulate < 1:
            raise ConfigError(f"train.accumulate: {self.accumulate} must be at least 1 (micro-batches per step)")


@dataclass(frozen=True)
class Recipe:
    """How to train a model: the seed, optimizer, schedule and loop."""

    seed: int = 0
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    train: LoopSettings = field(default_factory=LoopSettings)

    def with_epochs(self, epochs: int) -> "Recipe":
        return replace(self, train=replace(self.train, epochs=epochs))
