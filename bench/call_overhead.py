"""A whole `kdforge.distill` call vs a plain PyTorch loop doing the same training (issue 22), side by side.

Fashion-MNIST as the issue measured it: the 60000 training images passed to `distill` as an (x, y) pair, the
test set passed too, student cnn[8,16]/32, teacher cnn[32,64]/128 (untrained: a step costs the same), batch 128,
SGD (lr 0.05, momentum 0.9, wd 5e-4) + per-step OneCycle, `tensorboard=False`, `teacher_metrics=False`, seed 0.

Pairs (each distill call against the plain loop that does the same training, including the final test-set
evaluation the call returns):

- ce:     plain loop, student alone                     | `distill(method="ce")`
- kd:     plain loop, KD on precomputed teacher logits  | `distill(method="kd")` on a reused `teacher_cache`
- wsl:    plain loop, WSL on precomputed teacher logits | `distill(method="wsl")` on the same cache
- fitnet: plain loop, FitNet hint on precomputed teacher features + KD-free CE | `distill(method="fitnet")` on a
          cache with the teacher's features

Every round runs the eight in turn, the order rotated by one each round (and reversed every other round); the
ratio of each distill call to its plain loop is taken within a round, and the median over rounds is reported.
Before the rounds, the first call with a new cache (which builds it: one teacher pass over the training set)
is timed against the plain KD loop plus one teacher pass.

    python bench/call_overhead.py [--epochs 5] [--rounds 2] [--subset 0] [--threads 2] [--write]
    python bench/call_overhead.py --profile kd --epochs 1     # cProfile of one distill call (top 30, cumulative)
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

import kdforge
import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig, OptimConfig, ScheduleConfig, TeacherCacheConfig
from kdforge.engine import seed_everything
from kdforge.models import ModelSpec

from _report import command, machine, plain_kd_loss, today, write_section  # bench/_report.py

TEACHER = ModelSpec(name="cnn", params={"channels": [32, 64], "hidden": 128})
STUDENT = ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32})
LR, MOMENTUM, WD, BATCH, EVAL_BATCH = 0.05, 0.9, 5e-4, 128, 1000
FITNET = {"student_layer": "flatten", "teacher_layer": "flatten"}


# ---- plain loops --------------------------------------------------------------------------------------------
def _onecycle(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=total)


def wsl_plain(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float = 2.0,
              alpha: float = 2.5) -> torch.Tensor:
    """The official WSL loss (bellymonster knowledge_distiller.py), written by hand."""
    ce_s = F.cross_entropy(s.detach(), y, reduction="none")
    ce_t = F.cross_entropy(t, y, reduction="none")
    w = 1 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0))
    soft = -(F.softmax(t / temperature, -1) * F.log_softmax(s / temperature, -1)).sum(-1)
    return F.cross_entropy(s, y) + alpha * temperature**2 * (w * soft).mean()


def plain_loop(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, spec, epochs: int,
               kind: str = "ce", stored: dict[str, torch.Tensor] | None = None) -> float:
    """What a user writes by hand: build the student, SGD + OneCycle, shuffled batches of 128, the loss, and the
    test accuracy at the end. `stored` holds the teacher's outputs over the training set (logits, features)."""
    seed_everything(0)
    student = models.build(STUDENT, spec)
    params = list(student.parameters())
    connector = None
    if kind == "fitnet":
        assert stored is not None
        with torch.no_grad():
            s_dim = student.flatten(student.pool(student.features(x[:1]))).shape[1]
        connector = torch.nn.Linear(s_dim, stored["feature"].shape[1])
        params += list(connector.parameters())
    opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    steps = -(-len(y) // BATCH)
    sched = _onecycle(opt, epochs * steps)
    student.train()
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        for idx in torch.randperm(len(y), generator=g).split(BATCH):
            xb, yb = x[idx], y[idx]
            if kind == "fitnet":
                feat = student.flatten(student.pool(student.features(xb)))
                s = student.head(feat)
                loss = F.cross_entropy(s, yb) + 100 * F.mse_loss(connector(feat), stored["feature"][idx].float())
            else:
                s = student(xb)
                if kind == "ce":
                    loss = F.cross_entropy(s, yb)
                elif kind == "kd":
                    loss = plain_kd_loss(s, stored["logits"][idx].float(), yb, 4.0)
                else:
                    loss = wsl_plain(s, stored["logits"][idx].float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    student.eval()
    with torch.no_grad():
        correct = sum(int(student(a).argmax(-1).eq(b).sum()) for a, b in zip(xt.split(EVAL_BATCH), yt.split(EVAL_BATCH)))
    assert 0 <= correct <= len(yt)
    return 0.0


@torch.no_grad()
def teacher_pass(teacher: torch.nn.Module, x: torch.Tensor, feature: bool = False) -> dict[str, torch.Tensor]:
    """One pass of the teacher over the training set (eval mode, batches of 1000): what a plain loop stores."""
    teacher.eval()
    logits, feats = [], []
    for xb in x.split(EVAL_BATCH):
        f = teacher.flatten(teacher.pool(teacher.features(xb)))
        logits.append(teacher.head(f).half())
        feats.append(f.half())
    return {"logits": torch.cat(logits), "feature": torch.cat(feats) if feature else torch.empty(0)}


# ---- distill calls ------------------------------------------------------------------------------------------
def distill_call(x, y, xt, yt, spec, teacher, epochs: int, method: str, run_dir: Path, cache: Path | None,
                 **extra: Any) -> None:
    seed_everything(0)
    student = models.build(STUDENT, spec)
    kdforge.distill(student, teacher if method != "ce" else None, (x, y), test=(xt, yt), method=method,
                    epochs=epochs, batch_size=BATCH, eval_batch_size=EVAL_BATCH,
                    optim=OptimConfig(name="sgd", lr=LR, momentum=MOMENTUM, weight_decay=WD),
                    schedule=ScheduleConfig(name="onecycle"), run_dir=run_dir, overwrite=True,
                    tensorboard=False, teacher_metrics=False,
                    teacher_cache=None if cache is None else TeacherCacheConfig(path=str(cache)), **extra)


CPU: list[float] = []  # the process CPU seconds of each timed call, beside its wall seconds


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of fn(); its process CPU seconds go to CPU (steadier than wall on a shared machine when one
    torch thread runs: another process's work does not count)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    CPU.append(time.process_time() - c)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--subset", type=int, default=0, help="train on the first N images (0: all 60000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="ce,kd,wsl,fitnet", help="pairs to run")
    ap.add_argument("--profile", default=None, help="cProfile one distill call of this method and exit")
    ap.add_argument("--sort", default="cumulative", help="cProfile sort key")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--shared", default="", help="say in the table that the machine was shared (and how)")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    bundle = build_data(DataConfig(name="fashion_mnist", val_fraction=0.0))
    x, y = bundle.train.x, bundle.train.y
    if args.subset:
        x, y = x[: args.subset], y[: args.subset]
    xt, yt = bundle.test.x, bundle.test.y
    spec = bundle.spec
    seed_everything(0)
    teacher = models.build(TEACHER, spec).eval()
    e = args.epochs
    root = Path(tempfile.mkdtemp(prefix="call_overhead-"))
    kd_cache, feat_cache = root / "cache_logits", root / "cache_features"
    try:
        if args.profile:
            m = args.profile
            cache = None if m == "ce" else feat_cache if m == "fitnet" else kd_cache
            extra = {"params": FITNET} if m == "fitnet" else {}
            if cache is not None:
                distill_call(x, y, xt, yt, spec, teacher, 1, m, root / "warm", cache, **extra)  # builds the cache
            prof = cProfile.Profile()
            prof.enable()
            t = timed(lambda: distill_call(x, y, xt, yt, spec, teacher, e, m, root / "p", cache, **extra))
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats(args.sort).print_stats(45)
            print(s.getvalue())
            print(f"distill({m}) {t:.2f}s; plain {timed(lambda: plain_loop(x, y, xt, yt, spec, e, m if m != 'fitnet' else 'fitnet', teacher_pass(teacher, x, m == 'fitnet') if m != 'ce' else None)):.2f}s")
            return
        plain_loop(x[:5000], y[:5000], xt, yt, spec, 1)  # warm-up: allocator, kernels
        # the first call with a cache builds it (one teacher pass), against the plain loop + one teacher pass
        first: dict[str, float] = {}
        stored: dict[str, dict[str, torch.Tensor]] = {}
        first["teacher pass (logits)"] = timed(lambda: stored.__setitem__("kd", teacher_pass(teacher, x)))
        first["plain KD on stored logits"] = timed(lambda: plain_loop(x, y, xt, yt, spec, e, "kd", stored["kd"]))
        first["distill(kd), first call with teacher_cache (builds it)"] = timed(
            lambda: distill_call(x, y, xt, yt, spec, teacher, e, "kd", root / "first", kd_cache))
        stored["wsl"] = stored["kd"]
        pairs = [p for p in args.only.split(",") if p]
        if "fitnet" in pairs:
            stored["fitnet"] = teacher_pass(teacher, x, feature=True)
            distill_call(x, y, xt, yt, spec, teacher, 1, "fitnet", root / "warm", feat_cache, params=FITNET)
        print("first call: " + ", ".join(f"{k} {v:.2f}s" for k, v in first.items()), flush=True)
        runs: list[tuple[str, str]] = [(p, side) for p in pairs for side in ("plain", "distill")]
        times: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
        cpu: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
        for r in range(args.rounds):
            order = runs[r % len(runs):] + runs[: r % len(runs)]
            order = order if r % 2 == 0 else order[::-1]
            for pair, side in order:
                if side == "plain":
                    t = timed(lambda: plain_loop(x, y, xt, yt, spec, e, pair, stored.get(pair)))
                else:
                    cache = None if pair == "ce" else feat_cache if pair == "fitnet" else kd_cache
                    extra = {"params": FITNET} if pair == "fitnet" else {}
                    t = timed(lambda: distill_call(x, y, xt, yt, spec, teacher, e, pair, root / f"{pair}-r{r}", cache,
                                                   **extra))
                    shutil.rmtree(root / f"{pair}-r{r}", ignore_errors=True)
                times[(pair, side)].append(t)
                cpu[(pair, side)].append(CPU[-1])
            print(f"round {r}: " + ", ".join(
                f"{p} {times[(p, 'distill')][-1] / times[(p, 'plain')][-1]:.3f}x "
                f"({times[(p, 'distill')][-1]:.1f}/{times[(p, 'plain')][-1]:.1f}s; "
                f"CPU {cpu[(p, 'distill')][-1] / cpu[(p, 'plain')][-1]:.3f}x)" for p in pairs), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - t_all
    body = report(args, len(y), pairs, times, cpu, first, total)
    print(body)
    if args.write:
        write_section(args.out, "call_overhead", body)


LABELS = {
    ("ce", "plain"): "plain loop, student alone",
    ("ce", "distill"): '`kdforge.distill(method="ce")`',
    ("kd", "plain"): "plain loop, KD on precomputed teacher logits",
    ("kd", "distill"): '`kdforge.distill(method="kd")` on a reused `teacher_cache`',
    ("wsl", "plain"): "plain loop, WSL on precomputed teacher logits",
    ("wsl", "distill"): '`kdforge.distill(method="wsl")` on a reused `teacher_cache`',
    ("fitnet", "plain"): "plain loop, FitNet (CE + 100 hint) on precomputed teacher features",
    ("fitnet", "distill"): '`kdforge.distill(method="fitnet")` on a reused `teacher_cache` with features',
}


def report(args, n: int, pairs: list[str], times, cpu, first: dict[str, float], total: float) -> str:
    rounds = args.rounds
    lines = [
        "## Per-call overhead: a whole `kdforge.distill` call vs a plain loop (issue 22)",
        "",
        f"`{command()}` on {today()}, {total / 60:.1f} min; {machine()}; {args.threads} torch threads"
        + (f"; {args.shared}" if args.shared else "") + ".",
        "",
        f"Fashion-MNIST, {n} training images passed as an (x, y) pair, the test set passed, student cnn[8,16]/32, "
        f"teacher cnn[32,64]/128, {args.epochs} epochs, batch 128, SGD + OneCycle, `tensorboard=False`, "
        "`teacher_metrics=False`, seed 0, defaults otherwise (a checkpoint every epoch). Each plain loop builds the "
        "student, trains the same steps and evaluates the test set at the end; the cached pairs replay teacher "
        "outputs stored once (a tensor on the plain side, `teacher_cache` on the distill side). The runs rotate "
        "over rounds; ratios are taken within a round; the ratio column is the median (min-max) of the per-round "
        "ratios.",
        "",
        "| run | wall s, " + " / ".join(f"round {r + 1}" for r in range(rounds))
        + " | x the plain loop (wall) | x the plain loop (process CPU s) |",
        "|---|---|---|---|",
    ]
    for p in pairs:
        plain, dist = times[(p, "plain")], times[(p, "distill")]
        ratios = [a / b for a, b in zip(dist, plain)]
        cratios = [a / b for a, b in zip(cpu[(p, "distill")], cpu[(p, "plain")])]
        lines.append(f"| {LABELS[(p, 'plain')]} | {' / '.join(f'{t:.1f}' for t in plain)} | 1.00 | 1.00 |")
        lines.append(f"| {LABELS[(p, 'distill')]} | {' / '.join(f'{t:.1f}' for t in dist)} | "
                     f"**{statistics.median(ratios):.3f}** ({min(ratios):.3f}-{max(ratios):.3f}) | "
                     f"{statistics.median(cratios):.3f} ({min(cratios):.3f}-{max(cratios):.3f}) |")
    base = first["plain KD on stored logits"] + first["teacher pass (logits)"]
    call = first["distill(kd), first call with teacher_cache (builds it)"]
    lines += [
        "",
        "First call with a new `teacher_cache` (it builds the cache: one teacher pass), timed once before the rounds:",
        "",
        "| run | wall s |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in first.items()],
        f"| ratio: first call / (plain KD + teacher pass) | **{call / base:.3f}** |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
