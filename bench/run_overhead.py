"""A whole short run through `kdforge.run` vs a plain PyTorch loop doing the same optimizer steps, and where the
difference goes.

Two ways of looking, both side by side in one process:

1. Whole runs. Fashion-MNIST, the cnn[8,16] student alone (`ce`) and distilled from a cnn[32,64] teacher
   (`kd`), run through `kdforge.run` with the per-epoch extras toggled one at a time (TensorBoard, eval_every,
   checkpoint_every, progress bar), and as a plain hand-written loop (randperm slices, SGD, the same per-step
   cosine schedule, no evaluation, no files). Variants run in turn within a round, in reversed order every
   other round; each variant is compared with the plain loop and with the base variant of the same round
   (paired differences), and the medians over rounds are reported.
2. Components, each timed in isolation and repeated (median): validation, the final test evaluation, the
   teacher's val/test logits, a checkpoint write (split into safetensors, torch.save, sha256, fsync), the
   TensorBoard import / writer / per-scalar cost, a JSONL record, the progress bar, data and model build.
   Multiplied by how often a run does each (counted from the run's own metrics.jsonl), they should add up to
   the whole-run difference; what they do not explain is printed as the remainder.

To stay within a few minutes on 2 CPU cores, training uses `data.train_subset` (default 20000) with
`val_fraction` 0.3, so that validation (6000 samples) and test (10000) are as large as in a full run while an
epoch trains on 14000 samples instead of 54000. Per-epoch extras therefore weigh about 4x more here than in a
full-size run; the table also gives them per epoch so they can be set against a full epoch.

    python bench/run_overhead.py [--epochs 5] [--rounds 3] [--subset 20000]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

import kdforge
import kdforge.data as data
import kdforge.engine.checkpoint as ckpt_mod
import kdforge.methods as methods
import kdforge.models as models
from kdforge.api import TeacherLogits, build_data, settings, teacher_agreement
from kdforge.config.schema import DataConfig, ExperimentConfig, TeacherConfig
from kdforge.data import Batches
from kdforge.engine import Trainer, predict, seed_everything
from kdforge.engine.log import RunLogger, make_progress
from kdforge.engine.optim import build_scheduler
from kdforge.engine.settings import LoopSettings, OptimSettings, ScheduleSettings
from kdforge.methods import MethodSpec, Setup
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher

from _report import command, machine, plain_kd_loss, today, write_section  # bench/_report.py

TEACHER = ModelSpec(name="cnn", params={"channels": [32, 64], "hidden": 128})
STUDENT = ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32})
OPTIM = OptimSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)
SCHEDULE = ScheduleSettings(name="cosine")
T = 4.0
#: The engine's settings before this benchmark (every extra on, every epoch): the base of the toggles.
BASE = dict(eval_every=1, checkpoint_every=1, tensorboard=True, progress=True, log_every=50)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """min–max around the median, in % of the median."""
    m = median(xs)
    return f"{(min(xs) - m) / m:+.0%}/{(max(xs) - m) / m:+.0%}" if m else "-"


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# ---- configs and the plain loop -------------------------------------------------------------------------------
def make_cfg(args, method: str, out: Path, teacher_path: Path | None, epochs: int, **train: Any) -> ExperimentConfig:
    teacher = TeacherConfig(model=TEACHER, checkpoint=str(teacher_path)) if method != "ce" else None
    return ExperimentConfig(
        name=f"bench-{method}", output_dir=str(out),
        data=DataConfig(name="fashion_mnist", train_subset=args.subset, val_fraction=args.val_fraction, batch_size=128),
        student=STUDENT, teacher=teacher, method=MethodSpec(name=method), optim=OPTIM, schedule=SCHEDULE,
        train=LoopSettings(epochs=epochs, **train))


def plain_run(bundle, epochs: int, teacher=None) -> float:
    """What a user writes by hand: the same steps (batch 128, last batch partial), SGD, per-step cosine."""
    start = time.perf_counter()
    seed_everything(0)
    student = models.build(STUDENT, bundle.spec)
    opt = torch.optim.SGD(student.parameters(), lr=OPTIM.lr, momentum=OPTIM.momentum, weight_decay=OPTIM.weight_decay)
    x_all, y_all = bundle.train.x, bundle.train.y
    steps = -(-len(y_all) // 128)
    sched = build_scheduler(opt, SCHEDULE, epochs, steps)  # a LambdaLR, as by hand
    student.train()
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        for idx in torch.randperm(len(y_all), generator=g).split(128):
            x, y = x_all[idx], y_all[idx]
            s = student(x)
            if teacher is None:
                loss = F.cross_entropy(s, y)
            else:
                with torch.no_grad():
                    t = teacher(x)
                loss = plain_kd_loss(s, t, y, T)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def kdforge_run(cfg: ExperimentConfig, bundle) -> float:
    start = time.perf_counter()
    kdforge.run(cfg, bundle=bundle)
    return time.perf_counter() - start


# ---- 1. whole runs, side by side ------------------------------------------------------------------------------
def whole_runs(args, bundle, method: str, epochs: int, rounds: int, variants: dict[str, dict[str, Any] | None],
               root: Path, teacher_path: Path | None, teacher) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {v: [] for v in variants}
    names = list(variants)
    for r in range(rounds):
        for v in (names if r % 2 == 0 else names[::-1]):
            if variants[v] is None:
                times[v].append(plain_run(bundle, epochs, teacher))
            else:
                out = root / f"{method}-{v.replace(' ', '_')}-r{r}"
                times[v].append(kdforge_run(make_cfg(args, method, out, teacher_path, epochs, **variants[v]), bundle))
                if r > 0:
                    shutil.rmtree(out, ignore_errors=True)  # keep round 0's runs: their metrics.jsonl are counted
        print(f"{method} round {r}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in names), flush=True)
    return times


# ---- 2. components ----------------------------------------------------------------------------------------------
def subprocess_import(stmt: str, repeats: int) -> list[float]:
    """Seconds `stmt` takes in a fresh interpreter after `import torch` (so torch's own import is excluded)."""
    code = f"import time, torch; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    return [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeats)]


def components(args, bundle, teacher, teacher_path: Path, tmp: Path) -> dict[str, list[float]]:
    n = args.component_repeats
    res: dict[str, list[float]] = {}
    cfg = make_cfg(args, "ce", tmp / "c", None, args.epochs, **BASE)
    res["data build (data.build, Fashion-MNIST from IDX files)"] = timeit(lambda: build_data(cfg.data), 3)

    def build_trainer(method: str = "ce", run_dir: Path = tmp / "t"):
        seed_everything(0)
        student = models.build(STUDENT, bundle.spec)
        source = LiveTeacher(teacher) if method != "ce" else None
        m = methods.build(MethodSpec(name=method), student, source, Setup.for_data(bundle.spec, bundle.train))
        return Trainer(m, Batches(bundle, 128), settings.recipe(cfg.recipe), run_dir, eval_batch_size=1000)

    res["student + method + Trainer build"] = timeit(build_trainer, n)
    res["teacher load (models.load_model_with_info)"] = timeit(lambda: models.load_model_with_info(teacher_path), n)
    trainer = build_trainer()
    res["validation, student (6000 samples)"] = timeit(lambda: trainer._evaluate("val"), n)
    res["test evaluation, student (10000 samples)"] = timeit(lambda: trainer._evaluate("test"), n)
    memo = TeacherLogits()
    kd_trainer = build_trainer("kd", tmp / "kd")
    kd_trainer.extra_metrics = teacher_agreement(memo, "t", teacher, bundle, 1000, torch.device("cpu"))
    kd_trainer._evaluate("val")  # fills the memo: what follows is the per-epoch cost with agreement/KL
    res["validation + agreement/KL, memo warm"] = timeit(lambda: kd_trainer._evaluate("val"), n)
    res["teacher val+test logits (once per run)"] = timeit(  # seconds each: 3 repeats are enough
        lambda: [predict(teacher, s, 1000, torch.device("cpu")) for s in (bundle.val, bundle.test)], 3, warmup=0)

    # checkpoint: the whole _save, and its parts through wrappers on the module's own names
    parts: dict[str, list[float]] = {"weights: safetensors bytes, write + sha256 from memory": [0.0],
                                     "state.pt: write + sha256 from memory": [0.0],
                                     "fsync (3 files)": [0.0], "latest.json (atomic write + fsync)": [0.0]}
    originals = {k: getattr(ckpt_mod, k) for k in ("write_tensors", "write_checked", "_fsync_dir_files",
                                                    "atomic_write_text")}

    def wrap(name: str, key: str):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return originals[name](*a, **kw)
            finally:
                parts[key][-1] += time.perf_counter() - t
        return timed

    for name, key in zip(originals, parts):
        setattr(ckpt_mod, name, wrap(name, key))
    total = []
    try:
        trainer._save(0, 0)  # warm-up
        for i in range(n):
            for v in parts.values():
                v.append(0.0)
            t = time.perf_counter()
            trainer._save(i + 1, 0)
            total.append(time.perf_counter() - t)
    finally:
        for name, fn in originals.items():
            setattr(ckpt_mod, name, fn)
    state = {"rng": __import__("kdforge.engine.seeding", fromlist=["rng_state"]).rng_state(),
             "optimizers": {k: o.optimizer.state_dict() for k, o in trainer.optimizers.items()}}
    res["checkpoint write (Trainer._save, total)"] = total
    for key, v in parts.items():
        res[f"  of which {key}"] = v[1:]  # [0] is the warm-up
    res["  of which torch.save(state) (timed alone)"] = timeit(lambda: torch.save(state, tmp / "state.pt"), n)
    weights = sum(p.numel() * p.element_size() for p in trainer.method.trainable().state_dict().values())
    print(f"checkpoint: {weights / 1024:.1f} KiB of weights, state.pt {(tmp / 'state.pt').stat().st_size / 1024:.1f} KiB")

    # TensorBoard
    res["TensorBoard import (fresh interpreter, after torch)"] = subprocess_import(
        "from torch.utils.tensorboard import SummaryWriter", 3)
    res["kdforge.api import (fresh interpreter, after torch)"] = subprocess_import("import kdforge.api", 3)
    from torch.utils.tensorboard import SummaryWriter
    res["TensorBoard SummaryWriter create + close"] = timeit(lambda: SummaryWriter(str(tmp / "tb")).close(), n)
    k = 2000
    writer = SummaryWriter(str(tmp / "tb2"))
    res["TensorBoard add_scalar, per scalar"] = [x / k for x in timeit(
        lambda: [writer.add_scalar("step/loss", 0.5, i) for i in range(k)], n)]
    writer.close()
    record = {"epoch": 1, "loss": 0.5, "lr": 0.05, "ce": 0.5}
    logger = RunLogger(tmp / "jsonl", tensorboard=False)
    res["JSONL record (RunLogger.log, 4 values)"] = [x / k for x in timeit(
        lambda: [logger.log("step", i, **record) for i in range(k)], n)]
    logger.close()

    def progress_cycle() -> None:
        with make_progress(True) as p:
            p.add_task("x", total=10, status="")
    res["progress bar create/start/stop"] = timeit(progress_cycle, n)
    with make_progress(True) as p:
        task = p.add_task("x", total=10 ** 9, status="")
        res["progress bar advance, per step"] = [x / k for x in timeit(lambda: [p.advance(task) for _ in range(k)], n)]
    print(f"progress bar console is a terminal: {p.console.is_terminal}")
    res["progress bar in a terminal: CPU of its refresh thread, per s"] = [refresh_cpu(1.0) for _ in range(3)]
    student = trainer.method.eval_model()
    res["api.run files (save_model of the student)"] = timeit(
        lambda: models.save_model(tmp / "student", student, STUDENT, bundle.spec), n)
    return res


def refresh_cpu(wall: float) -> float:
    """CPU seconds per second that a live progress bar's 10 Hz refresh thread takes when stderr is a terminal
    (forced here, drawing to /dev/null) while the main thread sleeps."""
    with open(os.devnull, "w") as sink:
        console = Console(file=sink, force_terminal=True, width=120)
        with make_progress(True, console) as p:
            task = p.add_task("x", total=10 ** 6, status="loss 0.123 val 91.00%")
            p.advance(task)
            cpu = time.process_time()
            time.sleep(wall)
            return (time.process_time() - cpu) / wall


def count_events(run_dir: Path) -> dict[str, int]:
    """Records and TensorBoard scalars a run wrote, from its metrics.jsonl."""
    records = scalars = 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        records += 1
        scalars += sum(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for k, v in rec.items() if k not in ("event", "step", "time"))
    return {"records": records, "scalars": scalars}


# ---- report -----------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the student-alone runs")
    ap.add_argument("--kd-epochs", type=int, default=2, help="epochs of the KD runs")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the student-alone variants")
    ap.add_argument("--kd-rounds", type=int, default=3)
    ap.add_argument("--subset", type=int, default=20000, help="data.train_subset")
    ap.add_argument("--val-fraction", type=float, default=0.3)
    ap.add_argument("--component-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default: on a shared 2-core machine two OpenMP threads stall whenever "
                         "another process takes a core, which made single runs up to 5x slower")
    ap.add_argument("--root", type=Path, default=Path("runs/bench/run_overhead"))
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    shutil.rmtree(args.root, ignore_errors=True)
    args.root.mkdir(parents=True)
    bundle = build_data(make_cfg(args, "ce", args.root, None, 1).data)
    print(f"train {len(bundle.train)}, val {len(bundle.val)}, test {len(bundle.test)} samples", flush=True)
    seed_everything(0)
    teacher = models.build(TEACHER, bundle.spec).eval()  # untrained: step and evaluation cost do not depend on it
    teacher_path = args.root / "teacher"
    models.save_model(teacher_path, teacher, TEACHER, bundle.spec)
    e = args.epochs
    defaults = LoopSettings(epochs=e)
    new = ", ".join(f"{k} {getattr(defaults, k)}" for k in BASE if getattr(defaults, k) != BASE[k]) or "= base"
    ce_variants: dict[str, dict[str, Any] | None] = {
        "plain loop": None,
        "base": BASE,
        "tensorboard off": {**BASE, "tensorboard": False},
        f"eval_every {e}": {**BASE, "eval_every": e},
        f"checkpoint_every {e}": {**BASE, "checkpoint_every": e},
        "progress off": {**BASE, "progress": False},
        "all four off": {**BASE, "tensorboard": False, "eval_every": e, "checkpoint_every": e, "progress": False},
        f"LoopSettings defaults ({new})": {},
    }
    kd_variants: dict[str, dict[str, Any] | None] = {
        "plain loop": None, "base": BASE,
        "all four off": {**BASE, "tensorboard": False, "eval_every": args.kd_epochs,
                         "checkpoint_every": args.kd_epochs, "progress": False},
        f"LoopSettings defaults ({new})": {},
    }
    plain_run(bundle, 1)  # warm-up: allocator, kernels
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        comp = components(args, bundle, teacher, teacher_path, Path(tmp))
    print(f"components done at {time.perf_counter() - t_all:.0f}s", flush=True)
    ce = whole_runs(args, bundle, "ce", e, args.rounds, ce_variants, args.root, None, None)
    kd = whole_runs(args, bundle, "kd", args.kd_epochs, args.kd_rounds, kd_variants, args.root, teacher_path, teacher)
    counts = count_events(args.root / "ce-base-r0")
    steps = -(-len(bundle.train) // 128) * e
    print(f"whole benchmark: {time.perf_counter() - t_all:.0f}s")
    body = report(args, bundle, comp, ce, kd, counts, steps, time.perf_counter() - t_all)
    print(body)
    write_section(args.out, "run_overhead", body)


def report(args, bundle, comp, ce, kd, counts, steps, total_s) -> str:
    e = args.epochs
    med = {k: median(v) for k, v in comp.items()}
    lines = [
        "## Whole-run overhead: `kdforge.run` vs a plain PyTorch loop, and where it goes",
        "",
        f"`{command()}` on {today()}, {total_s / 60:.1f} min; {machine()}.",
        "",
        f"Fashion-MNIST with `data.train_subset={args.subset}`, `val_fraction={args.val_fraction}`: train "
        f"{len(bundle.train)}, val {len(bundle.val)}, test {len(bundle.test)} samples (val and test as large as in a "
        f"full run, an epoch trains on about a quarter of the full 54000), batch 128, SGD + per-step cosine. "
        f"Student cnn[8,16] alone (`ce`, {e} epochs, {steps} steps) and distilled from an (untrained, which costs "
        f"the same) cnn[32,64] teacher (`kd`, {args.kd_epochs} epochs). The plain loop builds the student and does "
        "the same optimizer steps, with no evaluation and no files; the data is built once and shared. "
        "`base` is every extra on every epoch (the defaults before this benchmark: eval_every 1, "
        "checkpoint_every 1, tensorboard on, progress on).",
        "",
        "### Whole runs, side by side",
        "",
        "Medians over rounds; Δ are medians of the paired differences within a round (variant − plain loop, "
        "variant − base); spread is the min/max of the variant's own times around its median.",
        "",
        "| run | variant | wall s (median) | spread | Δ vs plain s | ratio vs plain (paired) | Δ vs base s | rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, times in (("ce", ce), ("kd", kd)):
        plain = times["plain loop"]
        for v, xs in times.items():
            d_plain = median([a - b for a, b in zip(xs, plain)])
            r_plain = median([a / b for a, b in zip(xs, plain)])
            d_base = "" if v == "plain loop" else f"{median([a - b for a, b in zip(xs, times['base'])]):+.2f}"
            lines.append(f"| {label} | {v} | {median(xs):.2f} | {spread(xs)} | {d_plain:+.2f} | {r_plain:.3f} | "
                         f"{d_base} | {len(xs)} |")
    lines += [
        "",
        "### Components, timed in isolation",
        "",
        f"Median of {args.component_repeats} calls after a warm-up (imports: 3 fresh interpreters); ×count is how "
        f"often the `base` ce run ({e} epochs) does it, from its metrics.jsonl ({counts['records']} records, "
        f"{counts['scalars']} scalars) and its loop; per-epoch share is against one plain-loop epoch here "
        f"({median(ce['plain loop']) / e:.2f} s).",
        "",
        "| component | median | spread | × count in base ce run | s per run | per epoch vs a plain epoch |",
        "|---|---|---|---|---|---|",
    ]
    epoch_s = median(ce["plain loop"]) / e
    per_run_counts = {
        "validation, student (6000 samples)": e,
        "test evaluation, student (10000 samples)": 1,
        "checkpoint write (Trainer._save, total)": e,
        "TensorBoard import (fresh interpreter, after torch)": 1,
        "TensorBoard SummaryWriter create + close": 1,
        "TensorBoard add_scalar, per scalar": counts["scalars"],
        "JSONL record (RunLogger.log, 4 values)": counts["records"],
        "progress bar create/start/stop": 1,
        "progress bar advance, per step": steps,
        "student + method + Trainer build": 1,
        "api.run files (save_model of the student)": 1,
    }
    attributed = 0.0
    for k, xs in comp.items():
        m = med[k]
        shown = f"{m * 1e6:.1f} µs" if m < 1e-3 else f"{m * 1e3:.1f} ms" if m < 1 else f"{m:.2f} s"
        count = per_run_counts.get(k)
        if count is None:
            lines.append(f"| {k} | {shown} | {spread(xs)} | | | |")
            continue
        s = m * count
        attributed += s
        per_epoch = f"{s / e / epoch_s:.1%}"
        lines.append(f"| {k} | {shown} | {spread(xs)} | {count} | {s:.3f} | {per_epoch} |")
    measured = median([a - b for a, b in zip(ce["base"], ce["plain loop"])])
    lines += [
        "",
        f"Sum of the counted components: **{attributed:.2f} s** per base ce run, against a measured "
        f"**{measured:+.2f} s** (base − plain, paired median); the remainder, {measured - attributed:+.2f} s, is "
        "the training loop's own per-step cost over the plain loop (see the epoch benchmark above) plus noise. "
        "Not counted above: data build (shared by both sides here) and, for a run with a teacher, teacher load and "
        "its val/test logits (once per run, or once per comparison through `api.TeacherLogits`).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
