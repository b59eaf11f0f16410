"""The Python API; the CLI calls nothing else. Run a config, or distill your own modules on your own tensors."""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import kdforge.data as data_mod
import kdforge.methods as methods
import kdforge.models as models
from kdforge import __version__
from kdforge.config.load import dump_config
from kdforge.config.schema import (
    AugmentConfig, ExperimentConfig, MethodConfig, OptimConfig, RecipeConfig, ScheduleConfig, TeacherCacheConfig,
    TrainConfig,
)
from kdforge.data import DataBundle, DataSpec, Split
from kdforge.data.corruptions import check_images
from kdforge.data.root import cache_dir
from kdforge.engine import FitResult, Runtime, Trainer, seed_everything
from kdforge.engine.metrics import agreement_metrics, corruption_metrics
from kdforge.engine.trainer import ExtraMetrics
from kdforge.engine.lock import RunLock
from kdforge.errors import CheckpointError, ConfigError, TrainingDiverged
from kdforge.fileio import atomic_write_text
from kdforge.methods import Setup
from kdforge.models.infodrop import finetune_phase, finetune_recipe
from kdforge.registry import TEACHERS
from kdforge.teachers import CachedTeacher, LiveTeacher, TeacherCache
from kdforge.teachers.cache import CacheRequest, open_or_build
from kdforge.teachers.logits import TeacherLogits


def teacher_logits_dir() -> Path:
    """Where saved teachers' val/test logits are kept between processes ($KDFORGE_CACHE/teacher_logits)."""
    return cache_dir() / "teacher_logits"


def run(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False, bundle: DataBundle | None = None,
        teacher_logits: "TeacherLogits | None" = None) -> dict[str, Any]:
    """Run one experiment end to end: data, teacher, student, method, training; returns the summary.

    `teacher_logits` memoizes the teacher's logits on val/test for the agreement metrics; `compare` passes one
    for all its runs so they are computed once per teacher and data set.
    """
    t0 = time.perf_counter()
    runtime = Runtime.from_env(cfg.train.device)
    bundle = bundle or data_mod.build(cfg.data)
    methods.check_data(cfg.method, bundle)  # bad data for this method fails here, before a teacher is trained
    check_images(cfg.data.eval_corruptions, bundle.spec)
    teacher = prepare_teacher(cfg, bundle) if _wants_teacher(cfg) else None
    seed_everything(cfg.seed)
    student = models.build(cfg.student, bundle.spec, "student")
    source = TEACHERS[cfg.teacher.source].from_model(teacher, cfg.teacher) if teacher is not None else None
    run_dir = Path(cfg.run_dir)
    try:
        method = methods.build(cfg.method, student, source,
                               Setup.for_data(bundle.spec, bundle.train, cfg.train.label_smoothing))
        replay = isinstance(source, CachedTeacher) and methods.METHODS[cfg.method.name].needs_teacher
        views = _attach_cache(source, cfg, bundle, runtime) if replay else None  # type: ignore[arg-type]
        extra = None if teacher is None else teacher_agreement(teacher_logits or TeacherLogits(teacher_logits_dir()),
                                                              str(teacher_dir(cfg)), teacher, bundle,
                                                              cfg.data.eval_batch_size, runtime.device)
        recipe = finetune_recipe(cfg.recipe, cfg.student.infodrop)  # + InfoDrop's fine-tune epochs, if any
        trainer = Trainer(method, bundle, recipe, run_dir, cfg.data.batch_size, cfg.data.eval_batch_size,
                          cfg.data.augment, label=f"{cfg.method.name} seed {cfg.seed}", runtime=runtime,
                          extra_metrics=extra, views=views)
        finetune_phase(student, trainer, "student.infodrop")
        with RunLock(run_dir) if runtime.is_main else nullcontext():
            trainer.prepare(resume, overwrite)  # refuses a folder holding another run before anything is written
            if runtime.is_main:
                _write_run_files(run_dir, cfg, bundle)
            result = trainer.fit()
            if bundle.test is not None:  # robustness: top1@<corruption> beside the clean test metrics
                result.test.update(corruption_metrics(method.eval_model(), bundle.test, cfg.data.eval_corruptions,
                                                      cfg.data.eval_batch_size, runtime.device))
            summary = _summary(cfg, result, student, teacher, time.perf_counter() - t0)
            if runtime.is_main:
                models.save_model(run_dir / "student", student, cfg.student, bundle.spec,
                                  extra={"test": dict(result.test)})
                atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    finally:
        if source is not None:
            source.release()
    return summary


def teacher_agreement(store: TeacherLogits, key: str, teacher: nn.Module, bundle: DataBundle, batch_size: int,
                      device: torch.device) -> ExtraMetrics:
    """Agreement and KL with the teacher on a split, for the engine's `extra_metrics`; the teacher's logits come
    from `store` (computed once per teacher `key` and split)."""
    def extra(split: str, logits: Tensor) -> dict[str, float]:
        return agreement_metrics(logits, store.get(key, teacher, bundle.split(split), batch_size, device))
    return extra


def cache_request(cfg: ExperimentConfig, bundle: DataBundle, features: Sequence[str] = ()) -> CacheRequest:
    """What a teacher cache for this experiment must hold: its training splits' views under the run's
    augmentation, seed and batch size, and the features `features` the method taps."""
    assert cfg.teacher is not None
    splits = ("train", "unlabeled") if bundle.unlabeled is not None else ("train",)
    return CacheRequest(cfg.teacher.cache, cfg.data.augment, splits, tuple(features), cfg.data.batch_size, cfg.seed)


def _attach_cache(source: CachedTeacher, cfg: ExperimentConfig, bundle: DataBundle, runtime: Runtime,
                  rebuild: bool = False) -> TeacherCache:
    """Open (or build, on the main process) the cache `cfg` asks for, with the features the method tapped while
    it was built, and make `source` read from it; it is also the loader's source of recorded views."""
    return open_or_build(source, bundle, cache_request(cfg, bundle, source.paths), runtime.is_main,
                         runtime.barrier, rebuild=rebuild, progress=cfg.train.progress and runtime.is_main)


def build_teacher_cache(cfg: ExperimentConfig, rebuild: bool = False, bundle: DataBundle | None = None) -> TeacherCache:
    """Record the teacher's outputs for `cfg` (the method's tapped features included) without training anything
    else; a later `run` with `teacher.source: cache` (or the same `teacher.cache.path`) replays them."""
    if cfg.teacher is None:
        raise ConfigError(f"the config {cfg.name!r} has no teacher section: there is nothing to cache")
    runtime = Runtime.from_env(cfg.train.device)
    bundle = bundle or data_mod.build(cfg.data)
    teacher = prepare_teacher(cfg, bundle)
    seed_everything(cfg.seed)
    source = CachedTeacher.from_model(teacher, cfg.teacher)
    try:
        if methods.METHODS[cfg.method.name].needs_teacher:  # records which features the method taps
            methods.build(cfg.method, models.build(cfg.student, bundle.spec, "student"), source,
                          Setup.for_data(bundle.spec, bundle.train, cfg.train.label_smoothing))
        return _attach_cache(source, cfg, bundle, runtime, rebuild)
    finally:
        source.release()


def _write_run_files(run_dir: Path, cfg: ExperimentConfig, bundle: DataBundle) -> None:
    """The config as run and, when the data was cut by seed (a label budget), how: enough to reproduce it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    if bundle.splits:
        atomic_write_text(run_dir / "data_splits.json", json.dumps(bundle.splits))


def _wants_teacher(cfg: ExperimentConfig) -> bool:
    """The method needs the teacher, or it is already saved (then a student trained alone is still compared
    with it: agreement and KL); a teacher is never trained only for those metrics."""
    if cfg.teacher is None:
        return False
    return methods.METHODS[cfg.method.name].needs_teacher or (teacher_dir(cfg) / "model.json").exists()


def _summary(cfg: ExperimentConfig, result: FitResult, student: nn.Module, teacher: nn.Module | None,
             wall: float) -> dict[str, Any]:
    return {
        "name": cfg.name, "method": cfg.method.name, "seed": cfg.seed, "run_dir": cfg.run_dir,
        "kdforge_version": __version__,
        "student": {"model": cfg.student.name, "params": count_params(student)},
        "teacher": None if teacher is None else {"model": cfg.teacher.model.name, "params": count_params(teacher)},
        "epochs": result.epochs, "steps": result.steps, "resumed_from_epoch": result.resumed_from,
        "val": result.val, "test": result.test,
        "train_time_s": result.wall_time_s, "wall_time_s": wall,
    }


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- teachers ---------------------------------------------------------------------------------------------
# Training settings that change what is shown or written, never the weights: not part of a teacher's identity.
NO_EFFECT_ON_WEIGHTS = frozenset({"progress", "tensorboard", "log_every", "eval_every", "checkpoint_every",
                                  "checkpoint_steps", "eval_test"})


def teacher_dir(cfg: ExperimentConfig) -> Path:
    """Where the teacher lives: its checkpoint, or a folder keyed by everything that determines its weights."""
    assert cfg.teacher is not None
    if cfg.teacher.checkpoint is not None:
        return Path(cfg.teacher.checkpoint)
    recipe = cfg.teacher.recipe.model_dump(mode="json")
    recipe["train"] = {k: v for k, v in recipe["train"].items() if k not in NO_EFFECT_ON_WEIGHTS}
    data = {k: v for k, v in cfg.data.model_dump(mode="json").items() if k not in ("eval_batch_size",
                                                                                   "eval_corruptions")}
    model = cfg.teacher.model.model_dump(mode="json")
    if model.get("infodrop") is None:  # absent, as before the option existed: earlier teachers keep their folders
        model.pop("infodrop", None)
    elif model["infodrop"]["finetune_epochs"] == 0:  # likewise for InfoDrop teachers without the fine-tune phase
        model["infodrop"] = {k: v for k, v in model["infodrop"].items() if not k.startswith("finetune_")}
    key = json.dumps({"data": data, "model": model, "recipe": recipe},
                     sort_keys=True)
    return Path(cfg.teacher.store_dir) / f"{cfg.teacher.model.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepare_teacher(cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """Load the teacher, training it first from its recipe when no saved copy exists yet."""
    assert cfg.teacher is not None
    path = teacher_dir(cfg)
    if (path / "model.json").exists():
        model, saved, spec, _ = models.load_model_with_info(path)
        if spec != bundle.spec:
            raise CheckpointError(f"teacher {path} was trained on {spec}, but the data is {bundle.spec}")
        if saved != cfg.teacher.model:
            raise CheckpointError(f"teacher {path} is a {saved.name} {saved.params}, but teacher.model is "
                                  f"{cfg.teacher.model.name} {cfg.teacher.model.params}; make them agree")
        return model
    if cfg.teacher.recipe is None:
        raise CheckpointError(f"teacher checkpoint {path} does not exist; train it first or give teacher.recipe")
    return train_teacher(cfg, bundle, path)


def train_teacher(cfg: ExperimentConfig, bundle: DataBundle, path: Path) -> nn.Module:
    assert cfg.teacher is not None and cfg.teacher.recipe is not None
    recipe = finetune_recipe(cfg.teacher.recipe, cfg.teacher.model.infodrop)
    seed_everything(recipe.seed)
    model = models.build(cfg.teacher.model, bundle.spec, "teacher.model")
    method = methods.build(MethodConfig(name="ce"), model, None, Setup.for_data(bundle.spec, bundle.train, recipe.train.label_smoothing))
    runtime = Runtime.from_env(recipe.train.device)
    trainer = Trainer(method, bundle, recipe, path / "run", cfg.data.batch_size, cfg.data.eval_batch_size,
                      cfg.data.augment, label=f"teacher {cfg.teacher.model.name}", runtime=runtime)
    finetune_phase(model, trainer, "teacher.model.infodrop")
    try:
        result = trainer.fit(overwrite=True)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"training the teacher {cfg.teacher.model.name} from teacher.recipe: {e} "
                               "(the keys are under teacher.recipe)") from None
    if bundle.test is not None:  # the teacher's own robustness, in its model.json
        result.test.update(corruption_metrics(model, bundle.test, cfg.data.eval_corruptions, cfg.data.eval_batch_size,
                                              runtime.device))
    if runtime.is_main:
        models.save_model(path, model, cfg.teacher.model, bundle.spec,
                          extra={"test": dict(result.test), "val": dict(result.val)})
    runtime.barrier()
    return model.eval()


# ---- your own modules and tensors --------------------------------------------------------------------------
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
    recipe = RecipeConfig(seed=seed, optim=optim or OptimConfig(), schedule=schedule or ScheduleConfig(), train=train_cfg)
    runtime = Runtime.from_env(device)
    source: LiveTeacher | CachedTeacher | None = None
    if teacher is not None:
        source = LiveTeacher(teacher) if teacher_cache is None else CachedTeacher(LiveTeacher(teacher), teacher_cache)
    try:
        built = methods.build(MethodConfig(name=method, params=params or {}), student, source,
                              Setup.for_data(bundle.spec, bundle.train, label_smoothing))
        views = None
        if isinstance(source, CachedTeacher):
            request = CacheRequest(source.cfg, augment or AugmentConfig(), ("train",), tuple(source.paths),
                                   batch_size, seed)
            views = open_or_build(source, bundle, request, runtime.is_main, runtime.barrier, progress=progress)
        extra = (teacher_agreement(TeacherLogits(), "teacher", teacher, bundle, eval_batch_size, runtime.device)
                 if teacher is not None and teacher_metrics else None)
        return Trainer(built, bundle, recipe, run_dir or _new_run_dir(method), batch_size, eval_batch_size,
                       augment or AugmentConfig(), label=method, runtime=runtime,
                       extra_metrics=extra, views=views).fit(resume=resume, overwrite=overwrite)
    finally:
        if source is not None:
            source.release()


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
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ConfigError("data given to distill() holds NaN or infinite input values; clean them first")
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"data given to distill() has {len(x)} inputs and {len(y)} labels; give one label per "
                          "input, and at least one")
    return Split(x=x if x.dtype == torch.long else x.float(), y=y)  # int64 inputs are token ids: kept
