"""One distillation epoch through kdforge's Trainer vs the same epoch as a plain hand-written PyTorch loop.

Same data (Fashion-MNIST train, in memory), same teacher and student, same batch size, same loss (0.1 CE + 0.9
KD at T=4), same optimizer. The two are run alternately in one process, `--repeats` times each, and the
median wall time of each is compared; the ratio goes into docs/benchmarks.md.

    python bench/epoch_overhead.py [--repeats 7] [--subset 20000]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import kdforge.data as data
import kdforge.methods as methods
import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.log import RunLogger, make_progress
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.methods import MethodSpec, Setup
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher

from _report import command, machine, plain_kd_loss, today, write_section  # bench/_report.py

TEACHER = ModelSpec(name="cnn", params={"channels": [32, 64], "hidden": 128})
STUDENT = ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32})
BATCH, LR, T = 128, 0.05, 4.0


def fresh_models(spec):
    seed_everything(0)
    teacher = models.build(TEACHER, spec).eval()
    seed_everything(1)
    return teacher, models.build(STUDENT, spec)


def plain_epoch(bundle, epoch: int) -> float:
    """What a user writes by hand: shuffle indices, slice tensors, teacher under no_grad, CE + KD, SGD step."""
    teacher, student = fresh_models(bundle.spec)
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = bundle.train.x, bundle.train.y
    g = torch.Generator().manual_seed(epoch)
    start = time.perf_counter()
    student.train()
    for idx in torch.randperm(len(y_all), generator=g).split(BATCH):
        x, y = x_all[idx], y_all[idx]
        with torch.no_grad():
            t = teacher(x)
        loss = plain_kd_loss(student(x), t, y, T)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def kdforge_epoch(bundle, epoch: int, run_dir: Path) -> float:
    """The same epoch through Trainer's loop (progress bar on, JSONL logging, NaN guard, schedule stepping)."""
    teacher, student = fresh_models(bundle.spec)
    method = methods.build(MethodSpec(name="kd"), student, LiveTeacher(teacher),
                           Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(optim=OptimSettings(lr=LR), train=LoopSettings(epochs=1, progress=True, log_every=50))
    trainer = Trainer(method, Batches(bundle, BATCH), recipe, run_dir)
    logger = RunLogger(run_dir, tensorboard=True)
    try:
        with make_progress(True) as progress:
            task = progress.add_task("kdforge", total=len(trainer.loader), status="")
            start = time.perf_counter()
            trainer.train_epoch(epoch, 0, logger, lambda: progress.advance(task))
            elapsed = time.perf_counter() - start
    finally:
        logger.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--subset", type=int, default=20000, help="training samples per epoch")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    bundle = build_data(DataConfig(name="fashion_mnist", train_subset=args.subset))
    run_dir = Path("runs/bench")
    plain, ours = [], []
    plain_epoch(bundle, 0)  # warm-up: allocator, kernels
    for r in range(args.repeats):  # alternate which runs first, so drift in machine speed hits both alike
        if r % 2:
            ours.append(kdforge_epoch(bundle, r, run_dir / f"r{r}"))
            plain.append(plain_epoch(bundle, r))
        else:
            plain.append(plain_epoch(bundle, r))
            ours.append(kdforge_epoch(bundle, r, run_dir / f"r{r}"))
        print(f"repeat {r}: plain {plain[-1]:.3f} s, kdforge {ours[-1]:.3f} s")
    p, k = statistics.median(plain), statistics.median(ours)
    ratio = k / p
    paired = statistics.median(o / q for o, q in zip(ours, plain))  # each repeat's own ratio: less drift
    best = min(ours) / min(plain)  # best of N: the run least disturbed by the rest of the machine
    print(f"median: plain {p:.3f} s, kdforge {k:.3f} s, ratio {ratio:.3f}, median paired ratio {paired:.3f}, "
          f"best-of-{args.repeats} ratio {best:.3f}")
    write_table(args, p, k, ratio, paired, best, len(bundle.train))


def write_table(args, plain: float, ours: float, ratio: float, paired: float, best: float, n: int) -> None:
    row = (f"| distill epoch, Fashion-MNIST {n} samples, cnn[32,64]→cnn[8,16], batch {BATCH} | "
           f"{plain:.3f} | {ours:.3f} | **{ratio:.3f}** | {paired:.3f} | {best:.3f} | {args.repeats} |")
    body = (
        "## Training-loop overhead: kdforge vs a plain PyTorch loop\n\n"
        f"`{command()}` on {today()}; {machine()}.\n\n"
        "The same distillation epoch (same data in memory, models, batch size, CE + KD loss, SGD) written by hand\n"
        "and run through `kdforge.engine.Trainer.train_epoch` (progress bar, JSONL and TensorBoard logging, NaN\n"
        "guard, per-step schedule), alternately in one process. Target ratio: at most 1.03.\n\n"
        "| what | plain s (median) | kdforge s (median) | ratio of medians | median of paired ratios | best-of-N ratio | repeats |\n"
        "|---|---|---|---|---|---|---|\n" + row + "\n"
    )
    write_section(args.out, "epoch_overhead", body)


if __name__ == "__main__":
    main()
