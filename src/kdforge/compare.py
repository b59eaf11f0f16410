"""Run several methods over several seeds on one config; write a mean ± std table and a plot."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def method_config(cfg: ExperimentConfig, name: str) -> MethodConfig:
    """The config's own method params where it names this method, the method's defaults otherwise."""
    method = cfg.method if cfg.method.name == name else MethodConfig(name=name)
    check_method(method)  # every method's params are checked before the first run starts
    return method


def compare(cfg: ExperimentConfig, methods: list[str], seeds: int, out_dir: str | Path | None = None,
            resume: bool = False, overwrite: bool = False) -> Comparison:
    """Every method over `seeds` seeds; an earlier comparison's runs in `out_dir` are continued with `resume`,
    replaced with `overwrite`, and otherwise refused (nothing of them is deleted)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    require_extra("matplotlib", "report", "a comparison (its comparison.png)")  # before any run, not after them all
    if not methods:
        raise ConfigError("--methods names no method; give registered names separated by commas, e.g. ce,kd,wsl")
    chosen = [method_config(cfg, name) for name in methods]
    out = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    bundle = build_data(cfg.data)  # one data set for every run: the split does not depend on the seed
    for method in chosen:  # every method's data check before the teacher or any run is trained
        check_method(method, bundle)
    rows = []
    teacher_logits = TeacherLogits(teacher_logits_dir())  # the teacher's val/test logits, once for every run below
    if cfg.teacher is not None:
        rows.append(teacher_row(cfg, bundle, teacher_logits))
    summaries: dict[str, list[dict[str, Any]]] = {}
    for name, method in zip(methods, chosen):
        for seed in range(seeds):
            run_cfg = cfg.model_copy(update={"method": method, "seed": seed,
                                             "output_dir": str(out / name / f"seed{seed}")})
            summaries.setdefault(name, []).append(run(run_cfg, resume=resume, overwrite=overwrite, bundle=bundle,
                                                      teacher_logits=teacher_logits))
    rows += [aggregate(name, runs) for name, runs in summaries.items()]
    return _write(out, cfg, rows, summaries)


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
