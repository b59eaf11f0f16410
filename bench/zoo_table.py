"""The method zoo side by side on one data set: each row from its own example config (same data, teacher,
student and schedule; only `method` differs), over several seeds, in one table.

    python bench/zoo_table.py [--data fashion_mnist] [--seeds 3] [--methods ce,kd,...] [--jobs N] [key=value ...]
    python bench/zoo_table.py --plan bench/plans/cifar10_gpu.yaml [--jobs N] [--only LABELS] [key=value ...]

A plan is a YAML file naming the rows itself (label, config, overrides) and overrides for every row; without
one, each method `m` comes from `configs/<data>_<m>.yaml` (ce and kd from the KD config). Every row uses the
first row's teacher: it is trained (or found) once, and the others load it from its folder, so a row whose data
settings differ (a strong-augmentation recipe) still distils from the same teacher.

`--jobs N` runs N (row, seed) runs at once in separate processes: on a GPU one small run leaves the device
mostly idle. Runs go to runs/zoo_<data>/<label>/<method>/seed<k> (continued with --resume); the table and a plot to
runs/zoo_<data>/ and, with --write, into docs/results.md between `<!-- zoo:<key> -->` markers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import kdforge
from kdforge.api import build_data, load_config, prepare_teacher, teacher_dir, teacher_logits_dir
from kdforge.compare import compare, teacher_row
from kdforge.config import ExperimentConfig
from kdforge.fileio import atomic_write_text
from kdforge.report import aggregate, markdown_table, plot_comparison
from kdforge.teachers.logits import TeacherLogits

from _report import write_section  # bench/_report.py

CONFIGS = Path(__file__).parents[1] / "configs"
ZOO = ["ce", "kd", "wsl", "dkd", "fitnet", "at", "sp", "nst", "pkt", "rkd", "vid", "reviewkd", "crd"]  # CRD: slowest


@dataclass
class Row:
    label: str
    config: str
    overrides: list[str] = field(default_factory=list)


def example_config(data: str, method: str, overrides: list[str] = ()) -> ExperimentConfig:
    """`configs/<data>_<method>.yaml`; ce and kd live in the KD config (ce without KD's params)."""
    return load_config(*_example(data, method, overrides))


def _example(data: str, method: str, overrides: list[str]) -> tuple[Path, list[str]]:
    own = CONFIGS / f"{data}_{method}.yaml"
    extra = ["method.params={}"] if method == "ce" else []
    return (own if own.exists() else CONFIGS / f"{data}_kd.yaml"), [f"method.name={method}", *extra, *overrides]


def default_rows(data: str, methods: list[str]) -> list[Row]:
    rows = []
    for m in methods:
        path, overrides = _example(data, m, [])
        rows.append(Row(m, path.name, overrides))
    return rows


def load_plan(path: Path) -> tuple[str, list[str], list[Row]]:
    """(key, overrides for every row, rows) of a plan file."""
    plan = yaml.safe_load(path.read_text())
    rows = [Row(r["label"], r["config"], list(r.get("overrides", []))) for r in plan["rows"]]
    return plan.get("key", path.stem), list(plan.get("overrides", [])), rows


def row_configs(rows: list[Row], overrides: list[str]) -> dict[str, ExperimentConfig]:
    """Each row's config, every row after the first loading the first row's teacher from its folder."""
    cfgs = {r.label: load_config(CONFIGS / r.config, [*overrides, *r.overrides]) for r in rows}
    first = cfgs[rows[0].label]
    if first.teacher is None:
        return cfgs
    shared = str(teacher_dir(first))
    for label, cfg in list(cfgs.items())[1:]:
        if cfg.teacher is not None and cfg.teacher.checkpoint is None and cfg.teacher.model == first.teacher.model:
            cfgs[label] = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"checkpoint": shared})})
    return cfgs


def _run_one(cfg_json: str) -> str:
    """One (row, seed) run in a worker process; continues a run a killed worker left behind."""
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    summary = kdforge.run(cfg, resume=True)
    return f"{cfg.run_dir}: test top-1 {100 * summary['test']['top1']:.2f} % in {summary['train_time_s']:.0f} s"


def run_dir(out: Path, label: str, cfg: ExperimentConfig, seed: int) -> Path:
    return out / label / cfg.method.name / f"seed{seed}"


def run_parallel(cfgs: dict[str, ExperimentConfig], seeds: int, out: Path, jobs: int,
                 only: set[str] | None = None) -> None:
    """Every (row, seed) run, `jobs` at a time, after the shared teacher exists (so no two workers train it).

    Seed 0 of every row goes first, so a job cut short still has every row; a failed run is reported and the
    others go on. `only` restricts the runs to those rows (a row added to a plan whose other rows are done).
    """
    first = next(iter(cfgs.values()))
    if first.teacher is not None:
        prepare_teacher(first, build_data(first.data))
    todo = [cfg.model_copy(update={"seed": s, "output_dir": str(run_dir(out, label, cfg, s)),
                                   "train": cfg.train.model_copy(update={"progress": False})}).model_dump_json()
            for s in range(seeds) for label, cfg in cfgs.items() if only is None or label in only]
    # spawn: CUDA cannot be used in a forked child once the parent has touched it
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in as_completed([pool.submit(_run_one, c) for c in todo]):
            try:
                print(done.result(), flush=True)
            except Exception as e:  # noqa: BLE001 -- one broken run must not take the others down
                print(f"FAILED: {type(e).__name__}: {e}", flush=True)


def collect(cfgs: dict[str, ExperimentConfig], seeds: int, out: Path) -> list[dict]:
    """Table rows from the finished runs only (their summary.json); trains nothing but a missing teacher."""
    first = next(iter(cfgs.values()))
    rows = []
    if first.teacher is not None:
        rows.append(teacher_row(first, build_data(first.data), TeacherLogits(teacher_logits_dir())))
    for label, cfg in cfgs.items():
        done = [run_dir(out, label, cfg, s) / "summary.json" for s in range(seeds)]
        summaries = [json.loads(p.read_text()) for p in done if p.exists()]
        if summaries:
            rows.append(aggregate(label, summaries))
    return rows


def sequential(cfgs: dict[str, ExperimentConfig], seeds: int, out: Path, resume: bool) -> list[dict]:
    table_rows, teacher = [], None
    for label, cfg in cfgs.items():
        result = compare(cfg.model_copy(update={"name": label}), [cfg.method.name], seeds, out / label, resume=resume)
        teacher = teacher or next((r for r in result.rows if r["method"].startswith("teacher")), None)
        table_rows += [{**r, "method": label} for r in result.rows if not r["method"].startswith("teacher")]
        print(result.table, flush=True)
    return ([teacher] if teacher else []) + table_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default=",".join(ZOO))
    ap.add_argument("--plan", type=Path, help="YAML file of rows (label, config, overrides) and common overrides")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--collect", action="store_true", help="only tabulate the runs that have finished")
    ap.add_argument("--only", help="comma-separated row labels: run only these (with --jobs), tabulate all")
    ap.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args, overrides = ap.parse_known_args()
    if args.plan:
        key, common, rows = load_plan(args.plan)
    else:
        key, common, rows = args.data, [], default_rows(args.data, args.methods.split(","))
    cfgs = row_configs(rows, [*common, *overrides])
    data_name = next(iter(cfgs.values())).data.name
    out = Path("runs") / f"zoo_{key}"
    t0 = time.time()
    if args.jobs > 1 and not args.collect:
        run_parallel(cfgs, args.seeds, out, args.jobs, set(args.only.split(",")) if args.only else None)
    if args.jobs > 1 or args.collect:
        table_rows = collect(cfgs, args.seeds, out)
    else:
        table_rows = sequential(cfgs, args.seeds, out, args.resume)
    table = markdown_table(table_rows)
    atomic_write_text(out / "table.md", table)
    plot_comparison(table_rows, out / "comparison.png", f"method zoo on {data_name}")
    print(table)
    if args.write:
        source = f"--plan {args.plan.as_posix()}" if args.plan else f"--data {args.data}"
        body = (f"`python bench/zoo_table.py {source} --seeds {args.seeds} --jobs {args.jobs} {' '.join(overrides)}` "
                f"({(time.time() - t0) / 60:.0f} min on {time.strftime('%Y-%m-%d')}); test metrics mean ± std over "
                f"seeds 0..{args.seeds - 1}.\n\n" + table)
        write_section(Path("docs/results.md"), key, body, tag="zoo")


if __name__ == "__main__":
    main()
