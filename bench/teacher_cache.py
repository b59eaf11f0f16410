"""Teacher-output cache vs live teacher: epoch time side by side, cache build time and size, peak memory.

One process, one round = one epoch of each variant (order rotated per round), medians over rounds; ratios are
medians of each round's own ratio against the student trained alone through the same Trainer:

  plain CE / plain KD (cached logits)   hand-written loops: the student alone, and KD from logits in a tensor
  kdforge CE                            the student alone (method ce)
  kdforge KD, live teacher              teacher forward on every batch
  kdforge KD, cache fp16 / top-5        teacher.source: cache (full fp16 logits, or top-5 + log-sum-exp)

Peak memory (RSS) is measured in fresh processes running one KD epoch with the live teacher or the cache.

    python bench/teacher_cache.py [--rounds 5] [--skip-cifar]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import kdforge.data as data
import kdforge.methods as methods
import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import AugmentSettings, Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.methods import MethodSpec, Setup
from kdforge.models import ModelSpec
from kdforge.teachers import CachedTeacher, LiveTeacher
from kdforge.teachers.cache import CacheRequest, CacheSettings, RecordedViews, open_or_build

from _report import command, machine, peak_rss, plain_kd_loss, reset_peak_rss, today, write_section  # bench/_report.py

SETUPS = {
    "fashion_mnist": dict(data="fashion_mnist", subset=20000, augment=AugmentSettings(),
                          teacher=ModelSpec(name="cnn", params={"channels": [32, 64], "hidden": 128}),
                          student=ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32})),
    "cifar10": dict(data="cifar10", subset=1000, augment=AugmentSettings(crop_padding=4, flip=True),
                    teacher=ModelSpec(name="resnet32x4"), student=ModelSpec(name="resnet8x4")),
}
BATCH, LR = 128, 0.05
VARIANTS = ["plain CE", "plain KD (cached logits)", "kdforge CE", "kdforge KD, live teacher",
            "kdforge KD, cache fp16", "kdforge KD, cache top-5"]


class Bench:
    def __init__(self, name: str, workdir: Path, plain_logits: bool = True) -> None:
        s = SETUPS[name]
        self.name, self.setup = name, s
        self.bundle = build_data(DataConfig(name=s["data"], train_subset=s["subset"], batch_size=BATCH))
        seed_everything(0)
        self.teacher = models.build(s["teacher"], self.bundle.spec).eval()  # untrained: costs the same
        self.caches = {}
        self.build_s = {}
        for label, cfg in (("cache fp16", CacheSettings(path=str(workdir / f"{name}-full"))),
                           ("cache top-5", CacheSettings(path=str(workdir / f"{name}-top5"), storage="topk", k=5))):
            source = CachedTeacher(LiveTeacher(self.teacher), cfg)
            t0 = time.perf_counter()
            cache = open_or_build(source, self.bundle, CacheRequest(cfg, s["augment"], ("train",), (), BATCH, 0),
                                  progress=False)
            self.build_s[label] = time.perf_counter() - t0
            self.caches[label] = (cfg, cache)
        if plain_logits:
            with torch.no_grad():  # what a plain loop precomputes: the teacher's logits on the raw training inputs
                self.logits = torch.cat([self.teacher(x) for x in self.bundle.train.x.split(BATCH)])

    def student(self) -> torch.nn.Module:
        seed_everything(1)
        return models.build(self.setup["student"], self.bundle.spec)

    def plain(self, kd: bool, epoch: int) -> float:
        """What a user writes by hand: shuffle, slice, (crop/flip are not done here), CE or CE + KD, SGD."""
        student = self.student()
        opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
        x_all, y_all = self.bundle.train.x, self.bundle.train.y
        g = torch.Generator().manual_seed(epoch)
        start = time.perf_counter()
        for idx in torch.randperm(len(y_all), generator=g).split(BATCH):
            out = student(x_all[idx])
            loss = plain_kd_loss(out, self.logits[idx], y_all[idx]) if kd else F.cross_entropy(out, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def kdforge(self, variant: str, epoch: int, run_dir: Path) -> float:
        student = self.student()
        source, views = None, None
        if "live" in variant:
            source = LiveTeacher(self.teacher)
        elif "cache" in variant:
            cfg, views = self.caches[variant.removeprefix("kdforge KD, ")]
            source = CachedTeacher(LiveTeacher(self.teacher), cfg)
        method = methods.build(MethodSpec(name="ce" if source is None else "kd"), student, source,
                               Setup.for_data(self.bundle.spec, self.bundle.train))
        if views is not None:
            source.attach(views, self.bundle.spec.num_classes)
        recipe = Recipe(optim=OptimSettings(lr=LR), train=LoopSettings(epochs=1, progress=False, tensorboard=False))
        trainer = Trainer(method, Batches(self.bundle, BATCH, self.setup["augment"],
                                          None if views is None else RecordedViews(views)), recipe, run_dir)
        start = time.perf_counter()
        trainer.train_epoch(epoch, 0, None)
        elapsed = time.perf_counter() - start
        if source is not None:
            source.release()
        return elapsed

    def one(self, variant: str, epoch: int, run_dir: Path) -> float:
        if variant.startswith("plain"):
            return self.plain("KD" in variant, epoch)
        return self.kdforge(variant, epoch, run_dir)


def epoch_table(names: list[str], rounds: int, workdir: Path) -> tuple[str, dict]:
    rows, raw = [], {}
    for name in names:
        bench = Bench(name, workdir)
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        bench.one("kdforge CE", 0, workdir / "warm")  # warm-up: allocator, kernels
        for r in range(rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
            for v in order:
                times[v].append(bench.one(v, r, workdir / f"{name}-{r}"))
            print(f"{name} round {r}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in VARIANTS), flush=True)
        base = times["kdforge CE"]
        n = len(bench.bundle.train)
        for v in VARIANTS:
            med = statistics.median(times[v])
            paired = statistics.median(t / b for t, b in zip(times[v], base))
            rows.append(f"| {name} ({n} samples, {bench.setup['teacher'].name} → {bench.setup['student'].name}) | {v} | "
                        f"{med:.2f} | {n / med:,.0f} | **{paired:.3f}** |")
        raw[name] = {"times": times, "build_s": bench.build_s,
                     "bytes": {k: c.size_bytes() for k, (_, c) in bench.caches.items()},
                     "rows": n, "classes": bench.bundle.spec.num_classes}
    return "\n".join(rows), raw


def epoch_memory(name: str, variant: str, workdir: Path) -> tuple[float, float]:
    """MiB of RSS of a fresh process after loading data and models, and its peak during one epoch of `variant`."""
    out = subprocess.run([sys.executable, __file__, "--child", f"{name}:{variant}", "--workdir", str(workdir)],
                         capture_output=True, text=True, check=True)
    return tuple(float(v) for v in out.stdout.strip().splitlines()[-1].split())  # (RSS before, peak in the epoch)


def child(spec: str, workdir: Path) -> None:
    name, variant = spec.split(":", 1)
    bench = Bench(name, workdir, plain_logits=False)  # the caches exist already: opened, not built
    # Peak RSS of the epoch alone: loading the data peaks higher than training, so the high-water mark is reset.
    before = reset_peak_rss()
    bench.kdforge(variant, 0, workdir / "child")
    print(before, peak_rss())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--child", default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.workdir)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        names = ["fashion_mnist"] + ([] if args.skip_cifar else ["cifar10"])
        table, raw = epoch_table(names, args.rounds, workdir)
        rss = {n: {v: epoch_memory(n, v, workdir) for v in ("kdforge CE", "kdforge KD, live teacher",
                                                        "kdforge KD, cache fp16")} for n in names}
    minutes = (time.perf_counter() - t0) / 60
    print(json.dumps({"rss": rss, **{k: {kk: vv for kk, vv in v.items() if kk != "times"} for k, v in raw.items()}}))
    write_section(args.out, "teacher_cache", report(table, raw, rss, minutes))


def report(table: str, raw: dict, rss: dict, minutes: float) -> str:
    disk = "\n".join(
        f"| {name} | {r['rows']} × {r['classes']} | {r['bytes']['cache fp16'] / 1e6:.2f} MB | "
        f"{r['bytes']['cache top-5'] / 1e6:.2f} MB | {r['build_s']['cache fp16']:.1f} s |" for name, r in raw.items())
    return (
        "## Teacher-output cache vs live teacher\n\n"
        f"`{command()}` on {today()}, {minutes:.1f} min; {machine()}.\n\n"
        "One epoch of each variant per round, in rotating order, in one process; batch 128, SGD, KD = 0.1 CE + "
        "0.9 T²KL at T=4. Ratios are medians of each round's own ratio to `kdforge CE` (the student alone through "
        "the same Trainer). CIFAR-10 uses crop 4 + flip (the cache replays the recorded view); the plain loops "
        "do no augmentation. Teachers are untrained: a forward pass costs the same.\n\n"
        "| setup | variant | epoch s (median) | samples/s | × student alone |\n|---|---|---|---|---|\n"
        + table + "\n\n"
        "| setup | outputs | cache on disk, fp16 logits | top-5 + lse | build time (one teacher pass) |\n"
        "|---|---|---|---|---|\n" + disk + "\n\n"
        "Memory of a fresh process (MiB): resident after loading the data and both models, and the peak during "
        "one training epoch (the high-water mark is reset between the two). The cached run still loads the "
        "teacher's weights: they key the cache and serve the method's set-up dry forward.\n\n"
        "| setup | variant | RSS after set-up | peak RSS during the epoch | epoch peak − set-up |\n|---|---|---|---|---|\n"
        + "\n".join(f"| {n} | {v} | {a:.0f} | {b:.0f} | {b - a:+.0f} |" for n, r in rss.items() for v, (a, b) in r.items())
    )


if __name__ == "__main__":
    main()
