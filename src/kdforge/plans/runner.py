"""`kdforge reproduce PLAN`: run every (row, seed) of a plan, resumably, `jobs` at a time, and keep one record per
run in `results/<key>.jsonl` (rewritten, sorted, after each run finishes)."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdforge.config import ExperimentConfig
from kdforge.errors import ConfigError, KdforgeError
from kdforge.plans.plan import Plan, config_path, load_plan, slug
from kdforge.plans.records import (
    Record, config_digest, data_fingerprint, environment, git_commit, method_stats, read_records, weights_sha,
    write_records,
)


@dataclass(frozen=True)
class Job:
    row: str
    seed: int
    cfg_json: str
    digest: str
    threads: int
    commit: str


def row_configs(plan: Plan, plan_file: Path, extra: Iterable[str] = (), sliver: bool = False,
                teacher_store: str | None = None) -> dict[str, ExperimentConfig]:
    """Every row's config (plan overrides, then the row's, then `extra`, then the sliver's), validated before
    anything runs; rows distilling from another row's teacher load that teacher's folder."""
    from kdforge.api import load_config, teacher_dir

    tail = [*extra, *(plan.sliver if sliver else [])]
    cfgs = {}
    for row in plan.rows:
        try:
            cfg = load_config(config_path(plan_file, row.config), [*plan.overrides, *row.overrides, *tail])
        except ConfigError as e:
            raise ConfigError(f"plan {plan_file}, row {row.label!r}: {e}") from None
        if teacher_store and cfg.teacher is not None:  # only rows that have a teacher keep it there
            cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"store_dir": teacher_store})})
        cfgs[row.label] = cfg
    first = cfgs[plan.rows[0].label]
    for row in plan.rows:
        cfg = cfgs[row.label]
        source = row.teacher_from or (plan.rows[0].label if plan.shared_teacher and row is not plan.rows[0] else None)
        if source is None or cfg.teacher is None or cfg.teacher.checkpoint is not None:
            continue
        donor = cfgs[source] if row.teacher_from else first
        if donor.teacher is None or (not row.teacher_from and donor.teacher.model != cfg.teacher.model):
            continue
        cfgs[row.label] = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(
            update={"checkpoint": str(teacher_dir(donor)), "model": donor.teacher.model})})
    return cfgs


def _identity(cfg: ExperimentConfig) -> str:
    """The settings that decide a run's numbers, as canonical JSON: no folders (a teacher loaded from a folder is
    named by the folder's own name, which is its recipe's fingerprint), no display options."""
    from kdforge.api import without_later_defaults

    data = without_later_defaults(cfg.model_dump(mode="json"))  # records written before those keys stay current
    data.pop("output_dir")
    for key in ("progress", "tensorboard"):
        data["train"].pop(key, None)
    if data.get("teacher"):
        data["teacher"].pop("store_dir", None)
        if data["teacher"].get("recipe"):
            without_later_defaults(data["teacher"]["recipe"])
        if data["teacher"].get("checkpoint"):
            data["teacher"]["checkpoint"] = Path(data["teacher"]["checkpoint"]).name
    return json.dumps(data, sort_keys=True)


def run_job(job: Job) -> tuple[Record, dict[str, Any]]:
    """One (row, seed) run, continued if a killed run left checkpoints; returns its record and its timing."""
    from kdforge.api import build_data, run, teacher_dir

    torch.set_num_threads(job.threads)
    cfg = ExperimentConfig.model_validate_json(job.cfg_json)
    bundle = build_data(cfg.data)
    summary = run(cfg, resume=True, bundle=bundle)
    run_dir = Path(cfg.run_dir)
    teacher = None
    if cfg.teacher is not None and (teacher_dir(cfg) / "model.json").exists():
        teacher = {"folder": teacher_dir(cfg).name, "weights": weights_sha(teacher_dir(cfg))}
    record = {"row": job.row, "seed": job.seed, "method": cfg.method.name, "params": cfg.method.params,
              "config": job.digest, "test": summary["test"], "val": summary["val"],
              "method_stats": method_stats(run_dir), "steps": summary["steps"], "teacher": teacher,
              "student": weights_sha(run_dir / "student"), "data": data_fingerprint(bundle),
              "commit": job.commit, "env": environment(job.threads)}
    timing = {"row": job.row, "seed": job.seed, "train_time_s": round(summary["train_time_s"], 2),
              "wall_time_s": round(summary["wall_time_s"], 2), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return record, timing


def prepare_teachers(cfgs: dict[str, ExperimentConfig], threads: int, log: "Log") -> None:
    """Train (or find) each distinct teacher once, before workers start, so no two of them train the same one."""
    from kdforge.api import build_data, prepare_teacher, teacher_dir

    torch.set_num_threads(threads)
    seen: set[Path] = set()
    for label, cfg in cfgs.items():
        if cfg.teacher is None or teacher_dir(cfg) in seen:
            continue
        seen.add(teacher_dir(cfg))
        if not (teacher_dir(cfg) / "model.json").exists():
            log(f"training the teacher of row {label!r} into {teacher_dir(cfg)}")
        prepare_teacher(cfg, build_data(cfg.data))


class Log:
    """Progress lines on stdout and in the plan's reproduce.log (readable under nohup and in cluster logs)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def __call__(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        print(stamped, flush=True)
        with open(self.path, "a") as f:
            f.write(stamped + "\n")


def reproduce(plan_file: str | Path, jobs: int = 1, only: Iterable[str] | None = None, sliver: bool = False,
              results_dir: str | Path = "results", runs_dir: str | Path = "runs/results",
              threads: int | None = None, extra: Iterable[str] = (), teacher_store: str | Path | None = None) -> Path:
    """Run the plan's missing (row, seed) runs and return the records file. A run whose record exists for the
    same settings is skipped; one whose settings changed is rerun and its record replaced."""
    plan_file = Path(plan_file)
    plan = load_plan(plan_file)
    jobs = max(1, jobs)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    out = Path(runs_dir) / plan.key
    store = teacher_store or (out / "teachers" if sliver else None)  # a sliver's tiny teachers stay apart
    cfgs = row_configs(plan, plan_file, extra, sliver, teacher_store=None if store is None else str(store))
    chosen = set(only) if only else set(cfgs)
    unknown = chosen - set(cfgs)
    if unknown:
        raise ConfigError(f"--only {sorted(unknown)[0]!r} is not a row of {plan_file}; rows: {', '.join(cfgs)}")
    results = Path(results_dir) / f"{plan.key}.jsonl"
    timing = results.with_suffix(".timing.jsonl")
    records = {(r["row"], r["seed"]): r for r in read_records(results)}
    seeds = plan.seeds[:1] if sliver else plan.seeds
    commit = git_commit()
    todo = []
    for seed in seeds:  # seed-major: a plan cut short still has every row
        for label, cfg in cfgs.items():
            run_cfg = cfg.model_copy(update={"seed": seed, "output_dir": str(out / slug(label) / f"seed{seed}")})
            digest = config_digest(_identity(run_cfg))
            # exclude_unset: a data source refuses keys it does not take (val_fraction on Planetoid) when they are
            # written out explicitly; the worker rebuilds the same config from what was set
            if label in chosen and records.get((label, seed), {}).get("config") != digest:
                todo.append(Job(label, seed, run_cfg.model_dump_json(exclude_unset=True), digest, threads, commit))
    log = Log(out / "reproduce.log")
    log(f"plan {plan.key}: {len(todo)} runs to do, {jobs} at a time, {threads} thread(s) each, commit {commit}")
    prepare_teachers({label: cfgs[label] for label in chosen}, threads, log)
    _execute(todo, jobs, records, timing, lambda: write_records(results, records.values(), [r.label for r in plan.rows]),
             log)
    return results


def _execute(todo: list[Job], jobs: int, records: dict[tuple[str, int], Record], timing: Path, save: Any,
             log: Log) -> None:
    t0, done, failed = time.perf_counter(), 0, 0

    def finish(job: Job, result: tuple[Record, dict[str, Any]]) -> None:
        nonlocal done
        record, times = result
        records[(job.row, job.seed)] = record
        save()
        with open(timing, "a") as f:
            f.write(json.dumps(times, sort_keys=True) + "\n")
        done += 1
        eta = (time.perf_counter() - t0) / done * (len(todo) - done - failed) / 60
        top1 = record["test"].get("top1")
        shown = f"test top-1 {100 * top1:.2f} %" if top1 is not None else "done"
        log(f"[{done + failed}/{len(todo)}] {job.row} seed {job.seed}: {shown} in {times['wall_time_s']:.0f} s; "
            f"about {eta:.0f} min left")

    if jobs == 1:
        for job in todo:
            finish(job, run_job(job))
        return
    # spawn: a forked child cannot use CUDA once the parent touched it, and inherits the parent's thread pools
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in todo}
        for future in as_completed(futures):
            job = futures[future]
            try:
                finish(job, future.result())
            except Exception as e:  # noqa: BLE001 -- one broken run must not stop the others; it is named
                failed += 1
                log(f"FAILED {job.row} seed {job.seed}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
    if failed:
        raise KdforgeError(f"{failed} of {len(todo)} runs failed (see the lines above); fix them and run the same "
                           "command again: finished runs are kept")
