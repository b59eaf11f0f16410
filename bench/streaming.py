"""Streaming vs in-memory training data: the same `kdforge.distill` run fed from tensors in memory (the default
BatchIterator) and streamed through a DataLoader (kdforge.data.streaming: per-sample reads, each under its own
seed), with 0 and 2 worker processes. Seconds per epoch from FitResult.wall_time_s (no validation or test in the
run), repetitions rotating through the variants; the ratio is each repetition's epoch time over the in-memory one
of the same repetition, median over repetitions. The 0-worker stream must train bit for bit as in memory (the
same order and batches): the script checks it and says so.

    python bench/streaming.py [--repeats 2] [--subset 12000] [--epochs 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import kdforge
from kdforge.api import build_data, build_model
from kdforge.config.schema import DataConfig, ModelConfig, OptimConfig

from _report import command, machine, today, write_section  # bench/_report.py

BATCH = 128
STUDENT = ModelConfig(name="cnn", params={"channels": [8, 16], "hidden": 64})


def run(bundle, train, epochs: int, folder: Path, **kw) -> tuple[float, list[torch.Tensor]]:
    """Seconds per epoch of one run, and the student's weights after it."""
    torch.manual_seed(0)
    student = build_model(STUDENT, bundle.spec, "student")
    result = kdforge.distill(student, None, train, method="ce", epochs=epochs, batch_size=BATCH, run_dir=folder,
                             optim=OptimConfig(name="sgd", lr=0.05), eval_every=epochs + 1, tensorboard=False,
                             teacher_metrics=False, device="cpu", **kw)
    return result.wall_time_s / epochs, [p.detach().clone() for p in student.state_dict().values()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--subset", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    bundle = build_data(DataConfig(name="fashion_mnist", train_subset=args.subset))
    x, y = bundle.train.x, bundle.train.y
    variants = {
        "in memory (BatchIterator, the default)": lambda d: run(bundle, (x, y), args.epochs, d),
        "streamed, 0 workers": lambda d: run(bundle, TensorDataset(x, y), args.epochs, d, streaming=True),
        "streamed, 2 workers": lambda d: run(bundle, TensorDataset(x, y), args.epochs, d, streaming=True, workers=2),
    }
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # rotating: no variant always runs first
            weights = {}
            for name in order:
                t, weights[name] = variants[name](Path(tmp) / f"r{r}-{names.index(name)}")
                times[name].append(t)
            same &= all(torch.equal(a, b) for a, b in zip(weights[names[0]], weights[names[1]]))
            print(r, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    base = times[names[0]]
    rows = [f"| {name} | {statistics.median(ts):.2f} | {len(x) / statistics.median(ts):,.0f} | "
            f"**{statistics.median(t / b for t, b in zip(ts, base)):.2f}** | "
            + ", ".join(f"{t:.2f}" for t in ts) + " |" for name, ts in times.items()]
    body = (
        "## Streaming vs in-memory training data\n\n"
        f"`{command()}` on {today()}, {(time.perf_counter() - t0) / 60:.1f} min; {machine()}. The machine was not "
        "quiet: a background experiment queue and other sessions shared its 2 cores; the same in-memory epoch took "
        f"{min(base):.1f} to {max(base):.1f} s across repetitions, so read the ratios as rough.\n\n"
        f"Fashion-MNIST, {len(x)} training samples, student {STUDENT.name}{list(STUDENT.params['channels'])} alone "
        f"(`ce`), SGD, batch {BATCH}, {args.epochs} epochs a run, no validation; {args.repeats} repetitions, the "
        "variants' order rotating. Ratio: epoch time over the in-memory one of the same repetition, median. "
        f"The 0-worker stream trained {'bit for bit as' if same else 'NOT identically to'} the in-memory run "
        "(same order, same batches).\n\n"
        "| training data | s / epoch (median) | samples/s | ratio to in memory | each repetition s |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_section(args.out, "streaming", body)


if __name__ == "__main__":
    main()
