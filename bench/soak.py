"""Soak: distill for a long time and record resident memory and step time; memory must stay flat.

KD on Fashion-MNIST (cnn [32,64] teacher -> cnn [8,16] student, batch 128) through `kdforge.engine.Trainer`
with everything a real run does (validation, checkpoints every epoch and every 50 steps, JSONL + TensorBoard
logging), for `--minutes`. Every `--every` seconds it records RSS (from /proc/self/statm) and the mean step
time since the last record; the table and a plot go to docs/benchmarks.md and docs/img/soak.png.

    python bench/soak.py --minutes 60            # the issue's hour
    python bench/soak.py --minutes 10 --every 30 # what docs/benchmarks.md reports
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from _report import command, machine, today, write_section

import kdforge.methods as methods
import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.methods import MethodSpec
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher

ROOT = Path(__file__).resolve().parents[1]


class Done(Exception):
    """Raised by the epoch callback when the time is up."""


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Recorder:
    """Counts steps (wrapping the method's training_step) and samples RSS on a timer thread."""

    def __init__(self, method, every: float) -> None:
        self.steps, self.rows, self.every = 0, [], every
        inner = method.training_step

        def counted(batch, ctx):
            self.steps += 1
            return inner(batch, ctx)

        method.training_step = counted
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_t, last_steps = self.t0, 0
        while not self._stop.wait(self.every):
            now, steps = time.perf_counter(), self.steps
            ms = 1000 * (now - last_t) / max(steps - last_steps, 1)
            self.rows.append((now - self.t0, steps, rss_mib(), ms))
            last_t, last_steps = now, steps

    def start(self) -> "Recorder":
        self.rows.append((0.0, 0, rss_mib(), float("nan")))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def soak(minutes: float, every: float) -> list[tuple[float, int, float, float]]:
    bundle = build_data(DataConfig(name="fashion_mnist", train_subset=12000, test_subset=2000))
    seed_everything(0)
    teacher = models.build(ModelSpec(name="cnn", params={"channels": [32, 64], "hidden": 128}), bundle.spec)
    student = models.build(ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32}), bundle.spec)
    method = methods.build(MethodSpec(name="kd"), student, LiveTeacher(teacher),
                           methods.Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(optim=OptimSettings(lr=0.05), train=LoopSettings(
        epochs=1_000_000, progress=False, checkpoint_steps=50, log_every=10))
    deadline = time.perf_counter() + 60 * minutes

    def time_up(epoch: int, record: dict) -> None:
        if time.perf_counter() > deadline:
            raise Done

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(method, Batches(bundle, 128), recipe, run_dir, callbacks=[time_up])
        recorder = Recorder(method, every).start()
        try:
            trainer.fit()
        except Done:
            pass
        recorder.stop()
    return recorder.rows


def plot(rows: list[tuple[float, int, float, float]], every: float, path: Path) -> None:
    """RSS and step time against minutes, both axes from zero (a flat line must look flat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r[0] / 60 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(t, [r[2] for r in rows], marker=".")
    a.set(xlabel="minutes", ylabel="RSS MiB", title="resident memory (sampled)")
    b.plot(t[1:], [r[3] for r in rows[1:]], marker=".")
    b.set(xlabel="minutes", ylabel="ms / step", title=f"step time (mean over each {every:g} s interval)")
    for ax, vals in ((a, [r[2] for r in rows]), (b, [r[3] for r in rows[1:]])):
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.12 * max(vals))
    fig.suptitle(f"one run (n = 1, no interval); a point every {every:g} s", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows: list[tuple[float, int, float, float]], minutes: float, every: float) -> None:
    plot(rows, every, ROOT / "docs" / "img" / "soak.png")
    settled = [r for r in rows if r[0] >= 60]
    growth = settled[-1][2] - settled[0][2] if len(settled) > 1 else float("nan")
    lines = [
        "## Soak: memory and step time over a long run",
        "",
        f"`{command()}` — {today()}; {machine()}. KD on Fashion-MNIST (12,000 samples) with validation, "
        "checkpoints every epoch and every 50 steps, JSONL + TensorBoard logging.",
        "",
        f"RSS after the first minute: {settled[0][2]:.0f} MiB; at the end: {settled[-1][2]:.0f} MiB "
        f"(growth {growth:+.1f} MiB over {rows[-1][0] / 60:.1f} min, {rows[-1][1]} steps)." if settled else "",
        "",
        "| minute | steps | RSS MiB | ms/step |",
        "|---|---|---|---|",
        *[f"| {r[0] / 60:.1f} | {r[1]} | {r[2]:.0f} | {r[3]:.1f} |" for r in rows],
        "",
        "![soak](img/soak.png)",
    ]
    write_section(ROOT / "docs" / "benchmarks.md", "soak", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--every", type=float, default=30)
    args = ap.parse_args()
    rows = soak(args.minutes, args.every)
    for r in rows:
        print(f"{r[0] / 60:6.1f} min  {r[1]:7d} steps  {r[2]:7.0f} MiB  {r[3]:7.1f} ms/step")
    write(rows, args.minutes, args.every)


if __name__ == "__main__":
    main()
