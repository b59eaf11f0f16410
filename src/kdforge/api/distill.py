"""`distill`: your own modules on your own tensors, no registration."""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from kdforge.api import settings
from kdforge.api.assembly import assemble_distill
from kdforge.api.checks import check_models
from kdforge.api.runs import RunRecord, train_and_record
from kdforge.config.schema import (
    AugmentConfig, OptimConfig, RecipeConfig, ScheduleConfig, TeacherCacheConfig, TrainConfig,
)
from kdforge.data import Batches, DataBundle, DataSpec, Split
from kdforge.data.streaming import StreamedBatches, first_samples, stream_source, streamed_split
from kdforge.data.types import logits_of
from kdforge.data.user import to_split
from kdforge.engine import FitResult
from kdforge.engine.checkpoint import latest_checkpoint
from kdforge.errors import ConfigError
from kdforge.methods.base import EXAMPLE_SAMPLES
from kdforge.models import built_from


def distill(
    student: nn.Module,
    teacher: nn.Module | None,
    train: Split | tuple[Tensor, Tensor] | Dataset | DataLoader,
    val: Split | tuple[Tensor, Tensor] | Dataset | DataLoader | None = None,
    test: Split | tuple[Tensor, Tensor] | Dataset | DataLoader | None = None,
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
    checkpoint_steps: int | None = None,
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
    streaming: bool | None = None,
    workers: int = 0,
    precision: str = "fp32",
    accumulate: int = 1,
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
    unless `overwrite=True` (or continued with `resume=True`); it holds what a CLI run's holds (summary.json,
    config.yaml with these arguments, student/), and a call that fails before its first checkpoint leaves
    nothing there. `teacher_metrics=False` skips the teacher's
    forward passes on val/test that the agreement and KL metrics need. `teacher_cache` (a TeacherCacheConfig)
    records the teacher's outputs once (with `epochs` augmented views per sample) and replays them instead of
    running the teacher on every batch.

    Training data held in memory (a Split, an (x, y) pair, a map-style Dataset: stacked once) is the fast
    default. An IterableDataset or a DataLoader, or any data with `streaming=True`, is streamed instead: read
    sample by sample through a DataLoader (`workers` processes; a DataLoader brings its own workers, collate
    function and batch size), with the run's seeded order, exact resume and sharding under torchrun (see
    `kdforge.data.streaming`). Augmentation then belongs in the dataset's per-sample transforms; `num_classes`
    defaults to the width of the student's output. `val` and `test` are always held in memory.
    `precision` ("fp32", "bf16" autocast, "fp16" with a loss scaler on CUDA) and `accumulate` (micro-batches of
    `batch_size` per optimizer step) are `train.precision` / `train.accumulate` of a config.
    """
    t0 = time.perf_counter()
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value < 1:
            raise ConfigError(f"distill(): {key} must be at least 1, got {value}")
    bundle, batches = _training_data(student, teacher, train, val, test, batch_size=batch_size, augment=augment,
                                     num_classes=num_classes, streaming=streaming, workers=workers,
                                     teacher_cache=teacher_cache, keys=(label_key, output_key), seed=seed)
    train_cfg = TrainConfig(epochs=epochs, progress=progress, eval_every=eval_every, checkpoint_every=checkpoint_every,
                            checkpoint_steps=checkpoint_steps, grad_clip=grad_clip, label_smoothing=label_smoothing,
                            device=device, tensorboard=tensorboard, **_checked(TrainConfig, precision=precision,
                                                                               accumulate=accumulate))
    recipe_cfg = RecipeConfig(seed=seed, optim=optim or OptimConfig(), schedule=schedule or ScheduleConfig(),
                              train=train_cfg)
    folder = Path(run_dir or _new_run_dir(method))
    record = RunRecord(f"distill-{method}", method, seed, str(folder),
                       _arguments(recipe_cfg, method=method, params=params or {}, eval_batch_size=eval_batch_size,
                                  augment=augment, teacher_cache=teacher_cache, batches=batches, student=student,
                                  teacher=teacher),
                       _model_name(student), None if teacher is None else _model_name(teacher), built_from(student))
    with _removed_on_failure(folder):
        with assemble_distill(student, teacher, bundle, method=method, params=params or {},
                              recipe=settings.recipe(recipe_cfg), batches=batches, run_dir=folder,
                              eval_batch_size=eval_batch_size,
                              teacher_cache=None if teacher_cache is None else settings.cache(teacher_cache),
                              teacher_metrics=teacher_metrics) as a:
            return train_and_record(a, record, resume, overwrite, t0)[0]


def _checked(schema: type, **values: Any) -> dict[str, Any]:
    """`values` validated as fields of `schema`: a bad one is one ConfigError line naming the argument."""
    for name, value in values.items():
        try:
            schema.model_validate({name: value})
        except ValidationError as e:
            raise ConfigError(f"distill(): {name}={value!r}: {e.errors()[0]['msg']}") from None
    return values


@contextmanager
def _removed_on_failure(folder: Path) -> Iterator[None]:
    """A call that fails before its first checkpoint (nothing to resume) leaves nothing behind: the folders it
    created are removed, and in a folder that existed before, only what the call added."""
    created = next((p for p in reversed((folder, *folder.parents)) if not p.exists()), None)
    before = set() if created is not None else set(folder.iterdir()) if folder.is_dir() else set()
    try:
        yield
    except BaseException:
        if latest_checkpoint(folder / "checkpoints") is None:
            for path in [created] if created is not None else set(folder.iterdir()) - before:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise


def _model_name(model: nn.Module) -> str:
    """A model's name in the summary: its registered builder's, else its class's."""
    spec = built_from(model)
    return spec.name if spec is not None else type(model).__name__


def _arguments(recipe: RecipeConfig, *, method: str, params: dict[str, Any], eval_batch_size: int,
               augment: AugmentConfig | None, teacher_cache: TeacherCacheConfig | None, batches: Batches,
               student: nn.Module, teacher: nn.Module | None) -> str:
    """config.yaml of a distill() run: its arguments (the modules and data described, not stored), under a
    `distill:` key so that it is never mistaken for an experiment config."""
    bundle = batches.data
    data = {name: None if part is None else len(part) for name, part in
            (("train", bundle.train), ("val", bundle.val), ("test", bundle.test))}
    stream = batches.stream if isinstance(batches, StreamedBatches) else None
    args = {"method": {"name": method, "params": params}, "student": _model_name(student),
            "teacher": None if teacher is None else _model_name(teacher),
            "data": {"samples": data, "input_shape": list(bundle.spec.input_shape),
                     "num_classes": bundle.spec.num_classes,
                     "streaming": None if stream is None else {"workers": stream.workers}},
            "batch_size": batches.size, "eval_batch_size": eval_batch_size,
            "augment": (augment or AugmentConfig()).model_dump(mode="json"),
            "teacher_cache": None if teacher_cache is None else teacher_cache.model_dump(mode="json"),
            **recipe.model_dump(mode="json")}
    plain = json.loads(json.dumps(args, default=repr))  # method params of any type recorded, as text if need be
    return "# the arguments of a kdforge.distill() call (not an experiment config)\n" + yaml.safe_dump(
        {"distill": plain}, sort_keys=False)


def _training_data(student: nn.Module, teacher: nn.Module | None, train: Any, val: Any, test: Any, *,
                   batch_size: int, augment: AugmentConfig | None, num_classes: int | None, streaming: bool | None,
                   workers: int, teacher_cache: TeacherCacheConfig | None, keys: tuple[str, str],
                   seed: int) -> tuple[DataBundle, Batches]:
    """The run's data and how its batches are drawn: from memory, or streamed (see `distill`)."""
    held = lambda part: None if part is None else as_split(part, *keys)  # noqa: E731
    aug = settings.augment(augment or AugmentConfig())
    if not _streams(train, streaming):
        train_split = as_split(train, *keys)
        if train_split.y is None:
            raise ConfigError("distill(): the training data needs labels (an (x, y) pair or a labeled Split)")
        val_split, test_split = held(val), held(test)
        labels = max(int(s.y.max()) + 1 for s in (train_split, val_split, test_split) if s is not None and s.y is not None)
        if num_classes is not None and labels > num_classes:
            raise ConfigError(f"distill(): num_classes={num_classes}, but the labels run to class {labels - 1}")
        width = check_models(student, teacher, train_split, labels)
        if num_classes is not None and width != num_classes:
            raise ConfigError(f"distill(): num_classes={num_classes}, but the models give {width} classes per sample")
        bundle = DataBundle(DataSpec("custom", tuple(train_split.x.shape[1:]), width), train_split, val_split,
                            test_split)
        batches = Batches(bundle, batch_size, aug)
        batches.loader("train", seed)  # the augmentation checked against the data (token ids, several inputs) first
        return bundle, batches
    if aug.on:
        raise ConfigError("distill(): augment= works on data held in memory; for streamed data put the "
                          "augmentation in the dataset's per-sample transform")
    if teacher_cache is not None:
        raise ConfigError("distill(): teacher_cache= records views of data held in memory; stream with the live "
                          "teacher (no teacher_cache) or give the data as tensors")
    if not isinstance(train, (Dataset, DataLoader)):
        whole = as_split(train, *keys)
        train = TensorDataset(whole.x, whole.y)
    source, loader_batch = stream_source(train, workers)
    example = first_samples(source, EXAMPLE_SAMPLES)
    split = streamed_split(source, example)
    classes = num_classes or _output_width(student, split.x, keys[1])
    bundle = DataBundle(DataSpec("custom", tuple(split.x.shape[1:]), classes), split, held(val), held(test))
    return bundle, StreamedBatches(bundle, loader_batch or batch_size, aug, stream=source)


def _streams(train: Any, streaming: bool | None) -> bool:
    """Whether the training data is streamed: asked for, or a DataLoader / IterableDataset (never stacked)."""
    loader_like = isinstance(train, (DataLoader, IterableDataset))
    if streaming is False and loader_like:
        raise ConfigError(f"distill(train=...): a {type(train).__name__} is read by streaming; leave streaming= "
                          "unset (or True), or give the data as tensors")
    return loader_like if streaming is None else streaming


@torch.no_grad()
def _output_width(model: nn.Module, x: Tensor, output_key: str) -> int:
    """The number of classes a model predicts: its logits' last dimension on `x` (eval mode, mode restored)."""
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    try:
        out = logits_of(model(x.to(device)), output_key)
    finally:
        model.train(was_training)
    return int(out.shape[-1])


def _new_run_dir(method: str) -> Path:
    """runs/api/<method>-<date>-<time>[-n]: a folder no earlier call used."""
    base = Path("runs/api") / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def as_split(source: Split | tuple[Tensor, Tensor] | Dataset | DataLoader, label_key: str = "labels",
             output_key: str = "logits") -> Split:
    """Hold any (x, y) source as tensors in memory (`kdforge.data.user.to_split`): a Split, a pair of tensors, a
    dict of tensors or a Dataset (an IterableDataset read once), with one input, a tuple of inputs or named
    inputs; a DataLoader's dataset (val/test are held in memory; training data may be streamed)."""
    if isinstance(source, DataLoader):
        source = source.dataset
    if isinstance(source, IterableDataset):
        source = _Held(list(source))
    return to_split(source, label_key, output_key)


class _Held(Dataset):  # type: ignore[type-arg]
    """The samples of an IterableDataset, read once, as a map-style Dataset."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]
