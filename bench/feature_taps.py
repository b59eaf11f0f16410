"""What features cost: forward hooks (Taps) on N module paths against a plain forward + backward, and each
method's training step relative to KD's.

Taps: resnet8x4 on real CIFAR-10 batches (batch 64), the student's forward + backward + SGD step with 0, 1, 3
and 6 tapped paths (features captured and kept for the loss, as a feature method does).
Methods: every method built from its Fashion-MNIST example config (cnn[32,64] teacher -> cnn[8,16] student, live
teacher, batch 128), one full `training_step` each; medians of interleaved repeats, ratios to KD's step.

    python bench/feature_taps.py [--steps 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import kdforge.data as data
import kdforge.methods as methods
import kdforge.models as models
from kdforge.api import build_data, build_model, load_config, settings
from kdforge.config import ExperimentConfig
from kdforge.config.schema import DataConfig
from kdforge.data import Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.methods import Setup
from kdforge.models import ModelSpec
from kdforge.models.taps import Taps
from kdforge.teachers import LiveTeacher

from _report import command, machine, today, write_section  # bench/_report.py

TAP_SETS = {0: [], 1: ["layer2"], 3: ["layer1", "layer2", "layer3"],
            6: ["layer1", "layer2", "layer3", "layer1.0", "layer2.0", "fc:input"]}
METHODS = ["ce", "kd", "wsl", "dkd", "fitnet", "at", "sp", "nst", "pkt", "rkd", "vid", "crd", "reviewkd"]


CONFIGS = Path(__file__).parents[1] / "configs"


def example_config(data: str, method: str, overrides: list[str] = ()) -> ExperimentConfig:
    """`configs/<data>_<method>.yaml`; ce and kd live in the KD config (ce without KD's params)."""
    own = CONFIGS / f"{data}_{method}.yaml"
    extra = ["method.params={}"] if method == "ce" else []
    return load_config(own if own.exists() else CONFIGS / f"{data}_kd.yaml", [f"method.name={method}", *extra, *overrides])

def taps_table(steps: int, repeats: int) -> str:
    bundle = build_data(DataConfig(name="cifar10", train_subset=64 * steps))
    batches = [bundle.train.batch(idx) for idx in torch.arange(len(bundle.train)).split(64)]
    seed_everything(0)
    model = models.build(ModelSpec(name="resnet8x4"), bundle.spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def run(paths: list[str]) -> float:
        taps = Taps(model, paths) if paths else None
        start = time.perf_counter()
        for b in batches:
            if taps is None:
                logits = model(b.x)
                extra = 0.0
            else:
                with taps.capture() as feats:
                    logits = model(b.x)
                extra = sum(f.float().mean() for f in feats.values()) * 0.0  # keep them in the graph, as a loss would
            loss = F.cross_entropy(logits, b.y) + extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        elapsed = time.perf_counter() - start
        if taps is not None:
            taps.remove()
        return elapsed / len(batches)

    run([])  # warm-up
    times: dict[int, list[float]] = {n: [] for n in TAP_SETS}
    for r in range(repeats):
        for n in (list(TAP_SETS) if r % 2 == 0 else list(TAP_SETS)[::-1]):
            times[n].append(run(TAP_SETS[n]))
    rows = []
    for n, paths in TAP_SETS.items():
        paired = statistics.median(t / b for t, b in zip(times[n], times[0]))
        rows.append(f"| {n} | {', '.join(paths) or '–'} | {statistics.median(times[n]) * 1e3:.1f} | **{paired:.3f}** |")
    return "\n".join(rows)


def methods_table(steps: int, repeats: int) -> str:
    built = {name: example_config("fashion_mnist", name, [f"data.train_subset={128 * steps}"]) for name in METHODS}
    bundle = build_data(built["kd"].data)
    seed_everything(0)
    teacher = build_model(built["kd"].teacher.model, bundle.spec).eval()

    def trainer(name: str) -> Trainer:
        cfg = built[name]
        seed_everything(1)
        student = build_model(cfg.student, bundle.spec)
        method = methods.build(settings.method(cfg.method), student, LiveTeacher(teacher),
                               Setup.for_data(bundle.spec, bundle.train))
        recipe = Recipe(optim=OptimSettings(lr=0.05), train=LoopSettings(epochs=1, progress=False, tensorboard=False))
        return Trainer(method, Batches(bundle, 128), recipe, "runs/bench/taps")

    def epoch(name: str) -> float:
        t = trainer(name)
        start = time.perf_counter()
        t.train_epoch(0, 0, None)
        return (time.perf_counter() - start) / len(t.loader)

    epoch("kd")  # warm-up
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeats):
        for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
            times[m].append(epoch(m))
        print("round", r, {m: round(v[-1] * 1e3, 1) for m, v in times.items()}, flush=True)
    rows = []
    for m in METHODS:
        paired = statistics.median(t / k for t, k in zip(times[m], times["kd"]))
        rows.append(f"| {m} | {statistics.median(times[m]) * 1e3:.1f} | **{paired:.2f}** |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    taps = taps_table(args.steps, args.repeats)
    print(taps, flush=True)
    steps = methods_table(args.steps, args.repeats)
    print(steps)
    body = (
        "## Feature taps and each method's step\n\n"
        f"`{command()}` on {today()}, {(time.perf_counter() - t0) / 60:.1f} min; {machine()}.\n\n"
        f"Taps: resnet8x4 on {args.steps} real CIFAR-10 batches of 64, forward + backward + SGD step with forward "
        "hooks on N module paths (the features stay in the graph, as a feature loss keeps them); medians of "
        f"{args.repeats} interleaved repeats, ratio = median of each repeat's ratio to no taps.\n\n"
        "| taps | paths | ms per step | × no taps |\n|---|---|---|---|\n" + taps + "\n\n"
        f"Methods: one `training_step` per batch through the Trainer, each method from its "
        "`configs/fashion_mnist_<method>.yaml` (cnn[32,64] live teacher → cnn[8,16], batch 128, "
        f"{args.steps} batches); ratio = median of each repeat's ratio to KD's step.\n\n"
        "| method | ms per step | × KD |\n|---|---|---|\n" + steps
    )
    write_section(args.out, "feature_taps", body)


if __name__ == "__main__":
    main()
