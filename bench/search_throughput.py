"""Distiller-search throughput: candidate evaluations per hour with 1 and 2 worker processes, on SQLite and on a
PostgreSQL server (a throwaway one started in a temporary folder by the tests' helper, tests/throwaway_pg.py).

Each variant is a fresh search of the digits config (no data files) whose space holds only logit operations that
always fit, so every candidate is trained (no cheap rejections to skew the rate); the teacher is trained once
beforehand and shared. Wall time is that of `kdforge.search.runner.search` (study creation, worker start-up,
every candidate, best.yaml), so the start-up of spawned workers counts against 2 workers.

    python bench/search_throughput.py [--trials 16] [--proxy-epochs 8,40] [--no-write]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

import kdforge.search.runner as runner
from kdforge.search.evaluate import Outcome
from kdforge.search.runner import make_evaluator, search
from kdforge.search.space import load_search_config

from _report import command, machine, today, write_section  # bench/_report.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from throwaway_pg import local_postgres, unavailable  # noqa: E402  (tests/throwaway_pg.py: a test helper)

CONFIGS = Path(__file__).parents[1] / "configs"
LOGIT_OPS = ["softmax", "sigmoid", "l2norm", "batchnorm", "samplenorm", "mask_target"]


def write_config(folder: Path, name: str, trials: int, epochs: int, teachers: Path) -> Path:
    cfg = {"name": name, "experiment": str(CONFIGS / "digits_kd.yaml"),
           "overrides": ["train.progress=false", f"teacher.store_dir={teachers}"], "out": str(folder / name),
           "space": {"transforms": LOGIT_OPS, "max_transforms": 2},
           "evolution": {"trials": trials, "population": 4, "tournament": 2, "seed": 0},
           "proxy": {"train_subset": 1000, "val_subset": 180, "epochs": epochs, "warmup_batches": 3}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def measure(path: Path, workers: int, url: str | None) -> tuple[float, int, float]:
    """(wall seconds, candidates finished, mean seconds one candidate's evaluation took in its worker)."""
    t0 = time.perf_counter()
    search(path, workers=workers, storage_url=url)
    wall = time.perf_counter() - t0
    cfg, _ = load_search_config(path)
    trials = optuna.load_study(study_name=cfg.name, storage=url or cfg.storage_url).get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    seconds = [t.user_attrs["seconds"] for t in done if "seconds" in t.user_attrs]
    return wall, len(done), sum(seconds) / max(len(seconds), 1)


def storage_overhead(path: Path, url: str | None, trials: int) -> float:
    """Milliseconds per candidate of one worker's loop with an evaluator that trains nothing: what the storage and
    the sampler cost (stale check, ask, heartbeat, attributes, tell, re-reading the trials), all in this process."""
    cfg, experiment = load_search_config(path, [f"evolution.trials={trials}"])
    real = runner.make_evaluator
    runner.make_evaluator = lambda *a: (lambda params, run_dir: Outcome(50.0))  # noqa: E731
    try:
        t0 = time.perf_counter()
        runner.work(cfg, experiment, cfg.overrides, url or cfg.storage_url, verbose=False)
        return 1000 * (time.perf_counter() - t0) / trials
    finally:
        runner.make_evaluator = real


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--proxy-epochs", default="8,40", help="comma-separated proxy lengths (candidate sizes)")
    ap.add_argument("--overhead-trials", type=int, default=100, help="candidates of the storage-overhead rows")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    pg_missing = unavailable()
    rows, loads = [], [load()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teachers = folder / "teachers"
        warm, experiment = load_search_config(write_config(folder, "warm", 1, 1, teachers))
        make_evaluator(warm, experiment, warm.overrides)  # trains the shared teacher once, before any timing
        overhead = {}
        for storage in ["sqlite", "postgresql"]:
            if not (storage == "postgresql" and pg_missing):
                path = write_config(folder, f"overhead_{storage}", 1, 1, teachers)
                with (local_postgres(database="overhead") if storage == "postgresql" else nullcontext()) as url:
                    overhead[storage] = storage_overhead(path, url, args.overhead_trials)
                print(f"{storage}: {overhead[storage]:.1f} ms per candidate without training", flush=True)
        for epochs in [int(e) for e in args.proxy_epochs.split(",")]:
            for storage in ["sqlite", "postgresql"]:
                if storage == "postgresql" and pg_missing:
                    print(f"postgresql skipped: {pg_missing}")
                    continue
                for workers in (1, 2):
                    name = f"{storage}_{workers}w_{epochs}ep"
                    path = write_config(folder, name, args.trials, epochs, teachers)
                    with (local_postgres(database=name) if storage == "postgresql" else nullcontext()) as url:
                        wall, done, each = measure(path, workers, url)
                    rows.append((epochs, storage, workers, wall, done, each))
                    loads.append(load())
                    print(f"{name}: {done} candidates in {wall:.1f} s = {3600 * done / wall:.0f}/h", flush=True)
    base = {(e, st): 3600 * d / w for e, st, n, w, d, _ in rows if n == 1}
    lines = ["## Distiller search: candidate evaluations per hour, 1 vs 2 workers, SQLite vs PostgreSQL", "",
             f"`{command()}` on {today()}; {machine()}.", "",
             f"Digits search, {args.trials} candidates per row, proxy of N epochs on 1,000 samples (mlp[32] student, "
             "cnn teacher), logit operations only (every candidate is trained). Wall time is the whole `search()` "
             "call: study creation, worker start-up (a spawned worker imports torch, loads the data and the "
             "teacher) and every candidate; 'candidate s' is the mean time one evaluation took inside its worker. "
             f"1-minute load average of the machine during the rows: {' -> '.join(loads)} (2 cores).", "",
             "| proxy epochs | storage | workers | wall s | candidates | candidate s | candidates / hour | vs 1 worker |",
             "|---|---|---|---|---|---|---|---|"]
    for epochs, storage, workers, wall, done, each in rows:
        rate = 3600 * done / wall
        lines.append(f"| {epochs} | {storage} | {workers} | {wall:.1f} | {done} | {each:.2f} | {rate:.0f} | "
                     f"{rate / base[(epochs, storage)]:.2f}x |")
    lines += ["", f"Storage and sampler cost per candidate, measured alone ({args.overhead_trials} candidates, one worker, "
              "an evaluator that trains nothing): " + ", ".join(f"{k} {v:.1f} ms" for k, v in overhead.items()) + "."]
    if pg_missing:
        lines += ["", f"PostgreSQL not measured: {pg_missing}."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(Path(__file__).parents[1] / "docs" / "benchmarks.md", "search_throughput", body)


if __name__ == "__main__":
    main()
