"""Training-batch throughput: kdforge's in-memory BatchIterator vs a torch DataLoader with per-sample transforms.

Both produce the same kind of batches from the same tensors in memory: a random crop after zero padding and a
random horizontal flip per sample (and, in the second setting, mixup on the batch). The DataLoader side is what
a user writes with torchvision-style transforms: a Dataset whose __getitem__ augments one sample, the default
collate, and 0 or 2 worker processes. Samples per second over one epoch, median of repeats, side by side.

    python bench/data_pipeline.py [--repeats 3] [--data cifar10]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import kdforge.data as data
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import AugmentSettings

from _report import command, machine, today, write_section  # bench/_report.py

BATCH = 128


class PerSampleAugment(Dataset):
    """A torchvision-style dataset: crop (zero padding `pad`) and flip one sample at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, pad: int) -> None:
        self.x, self.y, self.pad = x, y, pad

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.pad(self.x[i], (self.pad,) * 4)
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        h, w = self.x.shape[-2:]
        img = img[:, top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def mixup(x: torch.Tensor, y: torch.Tensor, classes: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x))
    onehot = F.one_hot(y, classes).float()
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]


def time_kdforge(split, classes: int, cfg: AugmentSettings, epoch: int) -> float:
    it = data.BatchIterator(split, BATCH, classes, cfg, seed=0)
    start = time.perf_counter()
    for _ in it.epoch(epoch):
        pass
    return time.perf_counter() - start


def time_loader(split, classes: int, pad: int, workers: int, alpha: float) -> float:
    loader = DataLoader(PerSampleAugment(split.x, split.y, pad), batch_size=BATCH, shuffle=True,
                        num_workers=workers, persistent_workers=False)
    start = time.perf_counter()
    for x, y in loader:
        if alpha:
            mixup(x, y, classes, alpha)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    bundle = build_data(DataConfig(name=args.data))
    split, classes, n = bundle.train, bundle.spec.num_classes, len(bundle.train)
    pad = 4
    rows = []
    for label, alpha in (("crop + flip", 0.0), ("crop + flip + mixup 0.2", 0.2)):
        cfg = AugmentSettings(crop_padding=pad, flip=True, mixup_alpha=alpha)
        variants = {"kdforge BatchIterator": lambda r: time_kdforge(split, classes, cfg, r),
                    "DataLoader, per-sample transforms, 0 workers": lambda r: time_loader(split, classes, pad, 0, alpha),
                    "DataLoader, per-sample transforms, 2 workers": lambda r: time_loader(split, classes, pad, 2, alpha)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(fn(r))
            print(label, r, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
        base = times["DataLoader, per-sample transforms, 0 workers"]
        for name, ts in times.items():
            med = statistics.median(ts)
            speed = statistics.median(b / t for b, t in zip(base, ts))
            rows.append(f"| {label} | {name} | {med:.2f} | {n / med:,.0f} | **{speed:.1f}×** |")
    body = (
        "## Data pipeline: in-memory batches vs a DataLoader with per-sample transforms\n\n"
        f"`{command()}` on {today()}, {(time.perf_counter() - t0) / 60:.1f} min; {machine()}.\n\n"
        f"{args.data} training split ({n} samples, {tuple(split.x.shape[1:])}) held as one tensor; batch {BATCH}; one "
        "epoch per repeat, median of repeats; speed-up is the median of each repeat's ratio to the 0-worker "
        "DataLoader. kdforge draws every random choice for a batch at once and applies it with a few tensor ops "
        "(`data/augment.py`), so no worker processes are needed.\n\n"
        "| augmentation | pipeline | epoch s (median) | samples/s | vs DataLoader, 0 workers |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    write_section(args.out, "data_pipeline", body)


if __name__ == "__main__":
    main()
