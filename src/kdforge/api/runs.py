"""`run`: one experiment end to end; `build_teacher_cache`: only the teacher's recorded outputs."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from torch import nn

import kdforge.data as data_mod
import kdforge.methods as methods
import kdforge.models as models
from kdforge import __version__
from kdforge.api.teachers import prepare_teacher, teacher_agreement, teacher_dir, teacher_logits_dir
from kdforge.config.load import dump_config
from kdforge.config.schema import ExperimentConfig
from kdforge.data import DataBundle
from kdforge.data.corruptions import check_images
from kdforge.engine import FitResult, Runtime, Trainer, seed_everything
from kdforge.engine.lock import RunLock
from kdforge.engine.metrics import corruption_metrics
from kdforge.errors import ConfigError
from kdforge.fileio import atomic_write_text
from kdforge.methods import Setup
from kdforge.models.infodrop import finetune_phase, finetune_recipe
from kdforge.registry import TEACHERS
from kdforge.teachers import CachedTeacher, TeacherCache
from kdforge.teachers.cache import CacheRequest, open_or_build
from kdforge.teachers.logits import TeacherLogits


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


