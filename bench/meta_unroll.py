"""Cost of a meta-gradient through K unrolled student steps (`kdforge.meta`): time and peak memory for K = 1, 2,
5, 15 on real data.

Student cnn[8,16] on Fashion-MNIST, inner batches of 64, inner loss CE at a learned temperature, outer loss CE on
a validation batch of 256, meta-gradient with respect to the temperature (what L2T-DLN does with its loss network,
here with one hyper-parameter). Each K runs in a fresh process: time is the median of repeats of the whole
unroll + outer backward; memory is the peak RSS of that process while unrolling minus its RSS after set-up (the
high-water mark is reset after set-up, before the first unroll).

    python bench/meta_unroll.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _report import command, machine, peak_rss, reset_peak_rss, today, write_section  # bench/_report.py

STEPS = (1, 2, 5, 15)


def child(k: int, repeats: int) -> None:
    import kdforge.models as models
    from kdforge.api import build_data
    from kdforge.config.schema import DataConfig
    from kdforge.meta import meta_gradient
    from kdforge.models import ModelSpec

    bundle = build_data(DataConfig(name="fashion_mnist", train_subset=64 * 15 + 256))
    torch.manual_seed(0)
    student = models.build(ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32}), bundle.spec)
    xs, ys = bundle.train.x[: 64 * k].split(64), bundle.train.y[: 64 * k].split(64)
    xv, yv = bundle.train.x[-256:], bundle.train.y[-256:]
    temp = torch.tensor(2.0, requires_grad=True)
    inner = lambda f, i: F.cross_entropy(f(xs[i]) / temp, ys[i])  # noqa: E731
    outer = lambda f: F.cross_entropy(f(xv), yv)  # noqa: E731
    # Baseline before anything is unrolled: once freed, the graph's memory stays with the allocator, so a
    # baseline taken after a warm-up would hide it.
    before = reset_peak_rss()
    meta_gradient(student, inner, outer, [temp], k, 0.1)  # warm-up (its peak counts: same graph)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        meta_gradient(student, inner, outer, [temp], k, 0.1)
        times.append(time.perf_counter() - start)
    print(statistics.median(times), peak_rss() - before)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    if args.child is not None:
        return child(args.child, args.repeats)
    t0 = time.perf_counter()
    rows, base = [], None
    for k in STEPS:
        out = subprocess.run([sys.executable, __file__, "--child", str(k), "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True).stdout.split()
        sec, mib = float(out[-2]), float(out[-1])
        base = base or (sec, mib)
        rows.append(f"| {k} | {sec * 1e3:.0f} | {sec / k * 1e3:.0f} | {mib:.0f} | {mib / k:.1f} |")
        print(rows[-1], flush=True)
    body = (
        "## Meta-gradients through K unrolled steps\n\n"
        f"`{command()}` on {today()}, {(time.perf_counter() - t0) / 60:.1f} min; {machine()}.\n\n"
        "`kdforge.meta.meta_gradient`: cnn[8,16] on Fashion-MNIST, K inner SGD steps on batches of 64 (CE at a "
        "learned temperature), outer CE on 256 validation samples, gradient with respect to the temperature "
        "through all K steps. One fresh process per K; time is the median of repeats; memory is the peak RSS "
        "while unrolling above the RSS after set-up (every step's activations and gradient graph are kept, so "
        "it grows linearly in K).\n\n"
        "| K | ms per meta-gradient | ms per inner step | peak extra MiB | MiB per inner step |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    write_section(args.out, "meta_unroll", body)


if __name__ == "__main__":
    main()
