"""Run several methods over several seeds on one config; write a mean ± std table and a plot."""
from __future__ import annotations

import json
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from kdforge.api import build_data, check_method, prepare_teacher, run, teacher_dir, teacher_logits_dir
from kdforge.teachers.logits import TeacherLogits
from kdforge.config.schema import ExperimentConfig, MethodConfig
from kdforge.data import DataBundle
from kdforge.engine import resolve_device
from kdforge.engine.metrics import classification_metrics
from kdforge.errors import ConfigError, require_extra
from kdforge.fileio import atomic_write_text
from kdforge.report import aggregate, markdown_table, plot_comparison, write_csv


@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    table: str
    out_dir: Path


@dataclass(frozen=True)
class Variant:
    """One arm of a comparison or a study: a label for tables (and its folder) and the method it trains."""

    label: str
    method: MethodConfig

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9.=_-]+", "_", self.label)


def method_config(cfg: ExperimentConfig, name: str) -> MethodConfig:
    """The config's own method params where it names this method, the method's defaults otherwise."""
    method = cfg.method if cfg.method.name == name else MethodConfig(name=name)
    check_method(method)  # every method's params are checked before the first run starts
    return method


def parse_methods(cfg: ExperimentConfig, spec: str | list[str]) -> list[Variant]:
    """`ce,kd:temperature=1,kd:temperature=4,wsl` (or its entries as a list) -> variants, the one method syntax of
    the CLI; params not given come from the config when it names the same method, else the method's defaults.
    Every entry is validated before anything trains."""
    items = spec.split(",") if isinstance(spec, str) else spec
    variants = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, *pairs = item.split(":")
        params = dict(method_config(cfg, name).params)
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise ConfigError(f"--methods entry {item!r}: write NAME:key=value[:key=value], e.g. kd:temperature=4")
            params[key] = yaml.safe_load(value)
        method = MethodConfig(name=name, params=params)
        check_method(method)
        variants.append(Variant(item.replace(":", " ").replace("temperature=", "T="), method))
    if not variants:
        raise ConfigError("--methods names no method; e.g. ce,kd:temperature=1,kd:temperature=4,wsl")
    folders = [v.folder for v in variants]
    twice = sorted({f for f in folders if folders.count(f) > 1})
    if twice:
        raise ConfigError(f"--methods gives {', '.join(twice)} twice; give each entry once")
    return variants


def compare(cfg: ExperimentConfig, methods: str | list[str], seeds: int, out_dir: str | Path | None = None,
            resume: bool = False, overwrite: bool = False, jobs: int = 1) -> Comparison:
    """Every method entry (`parse_methods`) over `seeds` seeds, `jobs` runs at once in their own processes, each
    with this process's torch threads (the numbers of one run at a time; set OMP_NUM_THREADS to share cores); an earlier comparison's runs in `out_dir` are continued with `resume`,
    replaced with `overwrite`, and otherwise refused (nothing of them is deleted)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    require_extra("matplotlib", "report", "a comparison (its comparison.png)")  # before any run, not after them all
    variants = parse_methods(cfg, methods)
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    bundle = build_data(cfg.data)  # one data set for every run: the split does not depend on the seed
    for v in variants:  # every method's data check before the teacher or any run is trained
        check_method(v.method, bundle)
    rows = []
    teacher_logits = TeacherLogits(teacher_logits_dir())  # the teacher's val/test logits, once for every run below
    if cfg.teacher is not None:  # also trains (or finds) the teacher once, before any worker needs it
        rows.append(teacher_row(cfg, bundle, teacher_logits))
    todo = [(v.label, cfg.model_copy(update={"method": v.method, "seed": seed,
                                             "output_dir": str(out / v.folder / f"seed{seed}")}))
            for v in variants for seed in range(seeds)]
    if jobs == 1:
        done = [run(c, resume=resume, overwrite=overwrite, bundle=bundle, teacher_logits=teacher_logits)
                for _, c in todo]
    else:
        threads = torch.get_num_threads()  # this process's: numbers can depend on the thread count
        # spawn: a forked child cannot use CUDA once the parent touched it, and inherits the parent's thread pools
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_run_one, [(c.model_dump_json(), resume, overwrite, threads) for _, c in todo]))
    summaries: dict[str, list[dict[str, Any]]] = {}
    for (label, _), summary in zip(todo, done):  # in the order of --methods and seeds, however they finished
        summaries.setdefault(label, []).append(summary)
    rows += [aggregate(label, runs) for label, runs in summaries.items()]
    return _write(out, cfg, rows, summaries)


def _run_one(job: tuple[str, bool, bool, int]) -> dict[str, Any]:
    """One run of a comparison in a worker process."""
    cfg_json, resume, overwrite, threads = job
    torch.set_num_threads(threads)
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    return run(cfg, resume=resume, overwrite=overwrite, teacher_logits=TeacherLogits(teacher_logits_dir()))


def teacher_row(cfg: ExperimentConfig, bundle: DataBundle, teacher_logits: TeacherLogits) -> dict[str, Any]:
    """The teacher's own test metrics as a table row (its logits memoized in `teacher_logits`)."""
    assert cfg.teacher is not None
    teacher = prepare_teacher(cfg, bundle)
    logits = teacher_logits.get(str(teacher_dir(cfg)), teacher, bundle.test, cfg.data.eval_batch_size,
                                resolve_device(cfg.train.device))
    return aggregate(f"teacher ({cfg.teacher.model.name})", [{"test": classification_metrics(logits, bundle.test.y)}])


def _write(out: Path, cfg: ExperimentConfig, rows: list[dict[str, Any]],
           summaries: dict[str, list[dict[str, Any]]]) -> Comparison:
    table = markdown_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "table.md", f"# {cfg.name}: test metrics, mean ± std over seeds\n\n{table}")
    write_csv(rows, out / "table.csv")
    atomic_write_text(out / "results.json", json.dumps({"rows": rows, "runs": summaries}, indent=2))
    plot_comparison(rows, out / "comparison.png", f"{cfg.name} ({cfg.data.name}, {cfg.student.name} student)")
    return Comparison(rows=rows, table=table, out_dir=out)
