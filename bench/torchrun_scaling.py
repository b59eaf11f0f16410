"""Throughput of `kdforge distill` on 1 process vs 2 processes under torchrun (gloo on CPU), live and cached teacher.

Each variant is a fresh `kdforge distill` of the Fashion-MNIST KD config on a training subset; the epoch time is
read from the run's metrics.jsonl (time between consecutive epoch records, so process start, data loading,
validation of the last epoch and test evaluation are left out; validation runs every `eval_every` = 100 epochs,
i.e. never before the last). Scaling efficiency = (2-process throughput / 1-process throughput) / 2.

    python bench/torchrun_scaling.py [--subset 20000] [--epochs 4] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import command, machine, today, write_section  # bench/_report.py

CONFIG = Path(__file__).parents[1] / "configs" / "fashion_mnist_kd.yaml"


def epoch_seconds(run_dir: Path) -> list[float]:
    times = [r["time"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r["event"] == "epoch"]
    return [b - a for a, b in zip(times, times[1:])]


def distill(procs: int, threads: int, overrides: list[str], run_dir: Path) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "kdforge"]
            if procs > 1 else [sys.executable, "-m", "kdforge"])
    subprocess.run([*head, "distill", str(CONFIG), *overrides, f"output_dir={run_dir}"], env=env, check=True,
                   capture_output=True)
    return epoch_seconds(run_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subset", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"data.train_subset={args.subset}", f"train.epochs={args.epochs}", "train.eval_every=100",
                "train.tensorboard=false", "train.progress=false", f"teacher.store_dir={tmp}/teachers",
                "teacher.recipe.train.epochs=1", f"teacher.cache.path={tmp}/cache"]
        # Train the teacher and build the cache once, outside the timed runs.
        subprocess.run([sys.executable, "-m", "kdforge", "cache", "build", str(CONFIG), *base], check=True,
                       capture_output=True)
        variants = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes × 1 thread", 2, 1)]
        rows, per = [], {}
        for source in ("live", "cache"):
            for label, procs, threads in variants:
                runs = [distill(procs, threads, [*base, f"teacher.source={source}"], Path(tmp) / f"{source}-{procs}-{threads}-{r}")
                        for r in range(args.repeats)]
                per[(source, label)] = statistics.median(t for run in runs for t in run)
                print(source, label, per[(source, label)], flush=True)
            one = per[(source, "1 process, 1 thread")]
            for label, procs, threads in variants:
                sec = per[(source, label)]
                eff = one / sec / procs if procs > 1 else None
                rows.append(f"| {source} | {label} | {sec:.2f} | {args.subset / sec:,.0f} | {one / sec:.2f}× | "
                            f"{'' if eff is None else f'{eff:.0%}'} |")
    body = (
        "## torchrun: one process vs two\n\n"
        f"`{command()}` on {today()}, {(time.perf_counter() - t0) / 60:.1f} min; {machine()}.\n\n"
        f"`kdforge distill configs/fashion_mnist_kd.yaml` on {args.subset} training samples, global batch 128, "
        f"{args.epochs} epochs, {args.repeats} runs per variant; epoch time is the median over every epoch after "
        "the first of every run. 2 processes use gloo on this 2-core CPU machine, each with one thread.\n\n"
        "| teacher | variant | epoch s | samples/s | speed-up vs 1 process × 1 thread | scaling efficiency |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section(args.out, "torchrun_scaling", body)


if __name__ == "__main__":
    main()
