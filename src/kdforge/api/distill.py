"""`distill`: your own modules on your own tensors, no registration."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kdforge.api import settings
from kdforge.api.assembly import assemble_distill, run_lock
from kdforge.config.schema import (
    AugmentConfig, OptimConfig, RecipeConfig, ScheduleConfig, TeacherCacheConfig, TrainConfig,
)
from kdforge.data import Batches, DataBundle, DataSpec, Split
from kdforge.data.types import all_finite
from kdforge.engine import FitResult
from kdforge.errors import ConfigError


def distill(
    student: nn.Module,
    teacher: nn.Module | None,
    train: Split | tuple[Tensor, Tensor] | Dataset,
    val: Split | tuple[Tensor, Tensor] | Dataset | None = None,
    test: Split | tuple[Tensor, Tensor] | Dataset | None = None,
    *,
    method: str = "kd",
    params: dict[str, Any] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    eval_batch_size: int = 1000,
    optim: OptimConfig | None = None,
    schedule: ScheduleConfig | None = None,
    augment: AugmentConfig | None = None,
    num_classes: int | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
    eval_every: int = 5,
    checkpoint_every: int = 1,
    grad_clip: float | None = None,
    label_smoothing: float = 0.0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    tensorboard: bool = True,
    teacher_metrics: bool = True,
    teacher_cache: TeacherCacheConfig | None = None,
) -> FitResult:
    """Distill `teacher` into `student` (or train `student` alone with method="ce") on your own data.

    No registration is needed: any modules mapping a batch of inputs to logits work. The student is trained in
    place; the teacher is left as it was found (train/eval mode, requires_grad). Without `val` / `test` there
    is no validation / test evaluation and `result.val` / `result.test` are empty (their `.note` says why).
    `run_dir` defaults to a new folder runs/api/<method>-<time>; an existing run folder is never overwritten
    unless `overwrite=True` (or continued with `resume=True`). `teacher_metrics=False` skips the teacher's
    forward passes on val/test that the agreement and KL metrics need. `teacher_cache` (a TeacherCacheConfig)
    records the teacher's outputs once (with `epochs` augmented views per sample) and replays them instead of
    running the teacher on every batch.
    """
    train_split = as_split(train)
    if train_split.y is None:
        raise ConfigError("distill(): the training data needs labels (an (x, y) pair or a labeled Split)")
    classes = num_classes or int(train_split.y.max()) + 1
    bundle = DataBundle(DataSpec("custom", tuple(train_split.x.shape[1:]), classes), train_split,
                        as_split(val) if val is not None else None, as_split(test) if test is not None else None)
    train_cfg = TrainConfig(epochs=epochs, progress=progress, eval_every=eval_every, checkpoint_every=checkpoint_every,
                            grad_clip=grad_clip, label_smoothing=label_smoothing, device=device, tensorboard=tensorboard)
    recipe = settings.recipe(RecipeConfig(seed=seed, optim=optim or OptimConfig(), schedule=schedule or ScheduleConfig(),
                                          train=train_cfg))
    with assemble_distill(student, teacher, bundle, method=method, params=params or {}, recipe=recipe,
                          batches=Batches(bundle, batch_size, settings.augment(augment or AugmentConfig())),
                          run_dir=Path(run_dir or _new_run_dir(method)), eval_batch_size=eval_batch_size,
                          teacher_cache=None if teacher_cache is None else settings.cache(teacher_cache),
                          teacher_metrics=teacher_metrics) as a:
        with run_lock(a.run_dir, a.runtime):
            return a.trainer().fit(resume=resume, overwrite=overwrite)


def _new_run_dir(method: str) -> Path:
    """runs/api/<method>-<date>-<time>[-n]: a folder no earlier call used."""
    base = Path("runs/api") / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def as_split(source: Split | tuple[Tensor, Tensor] | Dataset) -> Split:
    """Hold any (x, y) source as tensors in memory: a Split, a pair of tensors, or a map-style Dataset."""
    if isinstance(source, Split):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        x, y = source
    elif isinstance(source, Dataset):
        items = [source[i] for i in range(len(source))]  # type: ignore[arg-type]
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise ConfigError(f"data must be a Split, an (x, y) pair of tensors or a Dataset, not {type(source).__name__}")
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    if x.is_floating_point() and not all_finite(x):
        raise ConfigError("data given to distill() holds NaN or infinite input values; clean them first")
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"data given to distill() has {len(x)} inputs and {len(y)} labels; give one label per "
                          "input, and at least one")
    return Split(x=x if x.dtype == torch.long else x.float(), y=y)  # int64 inputs are token ids: kept

