"""`distill`: your own modules on your own tensors, no registration."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from kdforge.api import settings
from kdforge.api.assembly import assemble_distill, run_lock
from kdforge.api.checks import check_models
from kdforge.config.schema import (
    AugmentConfig, OptimConfig, RecipeConfig, ScheduleConfig, TeacherCacheConfig, TrainConfig,
)
from kdforge.data import Batches, DataBundle, DataSpec, Split
from kdforge.data.user import to_split
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
    label_key: str = "labels",
    output_key: str = "logits",
) -> FitResult:
    """Distill `teacher` into `student` (or train `student` alone with method="ce") on your own data.

    No registration is needed: any modules mapping a batch of inputs to logits work. A model may return a tensor,
    or a dict, tuple or object holding the logits under `output_key` (a Hugging Face `SequenceClassifierOutput`).
    Data may be an (x, y) pair, a Dataset of (x, y) samples, x a tensor or a tuple of inputs (`model(x, mask)`),
    or dict samples whose tensors are passed by keyword, the labels under `label_key` (`input_ids`,
    `attention_mask`, `labels`); labels are class indices (one-hot rows are taken as such, soft labels refused).
    Each model is called once on two training samples first: inputs it refuses, outputs without logits and
    teacher/student class counts that differ are one-line ConfigErrors. The student is trained in
    place; the teacher is left as it was found (train/eval mode, requires_grad). Without `val` / `test` there
    is no validation / test evaluation and `result.val` / `result.test` are empty (their `.note` says why).
    `run_dir` defaults to a new folder runs/api/<method>-<time>; an existing run folder is never overwritten
    unless `overwrite=True` (or continued with `resume=True`). `teacher_metrics=False` skips the teacher's
    forward passes on val/test that the agreement and KL metrics need. `teacher_cache` (a TeacherCacheConfig)
    records the teacher's outputs once (with `epochs` augmented views per sample) and replays them instead of
    running the teacher on every batch.
    """
    train_split = as_split(train, label_key, output_key)
    if train_split.y is None:
        raise ConfigError("distill(): the training data needs labels (an (x, y) pair or a labeled Split)")
    val_split, test_split = (None if s is None else as_split(s, label_key, output_key) for s in (val, test))
    labels = max(int(s.y.max()) + 1 for s in (train_split, val_split, test_split) if s is not None and s.y is not None)
    if num_classes is not None and labels > num_classes:
        raise ConfigError(f"distill(): num_classes={num_classes}, but the labels run to class {labels - 1}")
    width = check_models(student, teacher, train_split, labels)
    if num_classes is not None and width != num_classes:
        raise ConfigError(f"distill(): num_classes={num_classes}, but the models give {width} classes per sample")
    bundle = DataBundle(DataSpec("custom", tuple(train_split.x.shape[1:]), width), train_split, val_split, test_split)
    train_cfg = TrainConfig(epochs=epochs, progress=progress, eval_every=eval_every, checkpoint_every=checkpoint_every,
                            grad_clip=grad_clip, label_smoothing=label_smoothing, device=device, tensorboard=tensorboard)
    recipe = settings.recipe(RecipeConfig(seed=seed, optim=optim or OptimConfig(), schedule=schedule or ScheduleConfig(),
                                          train=train_cfg))
    batches = Batches(bundle, batch_size, settings.augment(augment or AugmentConfig()))
    batches.loader("train", seed)  # the augmentation checked against the data (token ids, several inputs) first
    with assemble_distill(student, teacher, bundle, method=method, params=params or {}, recipe=recipe, batches=batches,
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


def as_split(source: Split | tuple[Tensor, Tensor] | Dataset, label_key: str = "labels",
             output_key: str = "logits") -> Split:
    """Hold any (x, y) source as tensors in memory (`kdforge.data.user.to_split`): a Split, a pair of tensors, a
    dict of tensors or a map-style Dataset, with one input, a tuple of inputs or named inputs."""
    return to_split(source, label_key, output_key)
