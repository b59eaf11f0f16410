"""`run`: one experiment end to end; `build_teacher_cache`: only the teacher's recorded outputs."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

import kdforge.models as models
from kdforge import __version__
from kdforge.api import settings
from kdforge.api.assembly import Assembly, assemble, build_data, prepare_teacher, run_lock
from kdforge.api.teachers import teacher_dir
from kdforge.config.load import dump_config
from kdforge.config.schema import ExperimentConfig
from kdforge.data import DataBundle
from kdforge.engine import FitResult, evaluate, resolve_device
from kdforge.engine.metrics import corruption_metrics
from kdforge.errors import CacheError, ConfigError
from kdforge.fileio import atomic_write_text, write_tensors
from kdforge.models import ModelSpec
from kdforge.models.io import WEIGHTS
from kdforge.teachers.cache import TeacherCache
from kdforge.teachers.cache.store import size_text
from kdforge.teachers.logits import TeacherLogits


def run(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False, bundle: DataBundle | None = None,
        teacher_logits: "TeacherLogits | None" = None, teacher: nn.Module | None = None) -> dict[str, Any]:
    """Run one experiment end to end: data, teacher, student, method, training; returns the summary.

    `teacher_logits` memoizes the teacher's logits on val/test for the agreement metrics; `compare` passes one
    for all its runs so they are computed once per teacher and data set. `bundle` and `teacher` reuse data and a
    teacher already loaded.
    """
    t0 = time.perf_counter()
    with assemble(cfg, bundle=bundle, teacher=teacher, teacher_logits=teacher_logits) as a:
        def robustness(result: FitResult) -> dict[str, float]:  # top1@<corruption> beside the clean test metrics
            return corruption_metrics(a.method.eval_model(), a.bundle.test, cfg.data.eval_corruptions,
                                      cfg.data.eval_batch_size, a.runtime.device) if a.bundle.test is not None else {}

        record = RunRecord(cfg.name, cfg.method.name, cfg.seed, cfg.run_dir, dump_config(cfg), cfg.student.name,
                           None if cfg.teacher is None else cfg.teacher.model.name, settings.model(cfg.student))
        return train_and_record(a, record, resume, overwrite, t0, robustness)[1]


@dataclass(frozen=True)
class RunRecord:
    """What a run folder says about its run besides the metrics, from a config (`run`) or from `distill()`'s
    arguments: `config_text` becomes config.yaml; `student_spec` lets `student/` be a folder `load_model`
    rebuilds (None for a caller's own module: then `student/` holds its weights only)."""

    name: str
    method: str
    seed: int
    run_dir: str
    config_text: str
    student_model: str
    teacher_model: str | None
    student_spec: ModelSpec | None


def train_and_record(a: Assembly, record: RunRecord, resume: bool, overwrite: bool, t0: float,
                     more_test: Callable[[FitResult], dict[str, float]] | None = None
                     ) -> tuple[FitResult, dict[str, Any]]:
    """Train the assembled run and write its folder as every run has it: config.yaml (and data_splits.json) once
    the folder is known to be free, then student/ and summary.json; `more_test` adds test metrics after fit."""
    trainer = a.trainer()
    with run_lock(a.run_dir, a.runtime):
        trainer.prepare(resume, overwrite)  # refuses a folder holding another run before anything is written
        if a.runtime.is_main:
            _write_run_files(a.run_dir, record.config_text, a.bundle)
        result = trainer.fit()
        if more_test is not None:
            result.test.update(more_test(result))
        summary = _summary(record, result, a.student, a.teacher, time.perf_counter() - t0)
        if a.runtime.is_main:
            _save_student(a, record.student_spec, result)
            atomic_write_text(a.run_dir / "summary.json", json.dumps(summary, indent=2))
    return result, summary


def _save_student(a: Assembly, spec: ModelSpec | None, result: FitResult) -> None:
    """student/ as a loadable model folder, or, for a module no registered builder made, its weights alone (the
    caller's class is needed to rebuild it: `kdforge eval` says so)."""
    if spec is not None:
        models.save_model(a.run_dir / "student", a.student, spec, a.bundle.spec, extra={"test": dict(result.test)})
        return
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in a.student.state_dict().items()}
    write_tensors(a.run_dir / "student" / WEIGHTS, state)


def build_teacher_cache(cfg: ExperimentConfig, rebuild: bool = False, bundle: DataBundle | None = None) -> TeacherCache:
    """Record the teacher's outputs for `cfg` (the method's tapped features included) without training anything
    else; a later `run` with `teacher.source: cache` (or the same `teacher.cache.path`) replays them."""
    if cfg.teacher is None:
        raise ConfigError(f"the config {cfg.name!r} has no teacher section: there is nothing to cache")
    with assemble(cfg, bundle=bundle, for_cache=True, rebuild_cache=rebuild) as a:
        assert a.cache is not None
        return a.cache


def ensure_teacher(cfg: ExperimentConfig) -> dict[str, Any]:
    """`cfg`'s teacher loaded, or trained first from its recipe: its model name, folder and test metrics (what
    `kdforge train --teacher` reports)."""
    if cfg.teacher is None:
        raise ConfigError(f"the config {cfg.name!r} has no teacher section to train")
    bundle = build_data(cfg.data)
    teacher = prepare_teacher(cfg, bundle)
    test = {} if bundle.test is None else evaluate(teacher, bundle.test, cfg.data.eval_batch_size,
                                                   resolve_device(cfg.train.device))
    return {"model": cfg.teacher.model.name, "dir": str(teacher_dir(cfg)), "test": test}


def cache_info(cache: TeacherCache | str | Path, verify: bool = False) -> str:
    """What a teacher cache holds (`kdforge cache info`); with `verify`, every shard's sha256 checked first (a
    CacheError names the damaged ones)."""
    cache = cache if isinstance(cache, TeacherCache) else TeacherCache(Path(cache))
    text = _describe(cache)
    if verify:
        bad = cache.verify()
        if bad:
            raise CacheError(f"{len(bad)} damaged or missing shard(s): {', '.join(bad)}; rebuild the cache "
                             "(kdforge cache build CONFIG --rebuild)")
        text += "\nevery shard matches its sha256"
    return text


def _describe(cache: TeacherCache) -> str:
    """A few lines on what a cache holds, for `kdforge cache info`."""
    key, built = cache.key, cache.manifest.get("built", {})
    storage = key["storage"]
    kind = "all logits" if storage["kind"] == "full" else f"top-{storage['k']} logits + log-sum-exp"
    splits = ", ".join(f"{name} ({info['rows']} samples)" for name, info in cache.manifest["splits"].items())
    aug = {k: v for k, v in key["augment"].items() if v and k != "mix_prob"} or "none"
    return "\n".join([
        f"teacher cache {cache.path} (key {cache.manifest['key_hash']})",
        f"  splits: {splits}; {key['epochs']} recorded epoch(s) of views; augmentation: {aug}",
        f"  storage: {kind}, {storage['dtype']}; features: {', '.join(key['features']) or 'none'}",
        f"  teacher weights sha256 {key['teacher_weights'][:16]}…; built {built.get('time', '?')} with seed "
        f"{built.get('seed', '?')}, batch {built.get('batch_size', '?')}",
        f"  size on disk: {size_text(cache.size_bytes())}",
    ])


def _write_run_files(run_dir: Path, config_text: str, bundle: DataBundle) -> None:
    """The config as run and, when the data was cut by seed (a label budget), how: enough to reproduce it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_text)
    if bundle.splits:
        atomic_write_text(run_dir / "data_splits.json", json.dumps(bundle.splits))


def _summary(record: RunRecord, result: FitResult, student: nn.Module, teacher: nn.Module | None,
             wall: float) -> dict[str, Any]:
    return {
        "name": record.name, "method": record.method, "seed": record.seed, "run_dir": record.run_dir,
        "kdforge_version": __version__,
        "student": {"model": record.student_model, "params": count_params(student)},
        "teacher": None if teacher is None else {"model": record.teacher_model, "params": count_params(teacher)},
        "epochs": result.epochs, "steps": result.steps, "resumed_from_epoch": result.resumed_from,
        "val": result.val, "test": result.test,
        "train_time_s": result.wall_time_s, "wall_time_s": wall,
    }


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
