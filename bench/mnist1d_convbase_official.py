"""The official MNIST-1D ConvBase benchmark loop, ported line by line, on kdforge's copy of the data.

greydanus/mnist1d@7878d96 notebooks/models.py:36-54 (ConvBase) and notebooks/train.py:20-78 (get_model_args,
train_model), run as notebooks/mnist1d-classification.ipynb cell 5 runs it: Adam lr 1e-2, weight decay 0,
batch 100, `total_steps` 6000 (so 6001 updates: `range(total_steps + 1)`), the 4,000 training samples in their
stored order (batch at `(step * 100) % 4000`, never shuffled), the test split evaluated every 250 steps.
It prints, per seed, the test accuracy after the last step and the best test accuracy over the 25 evaluations
(what a curve read by eye reports), and the step of that best value.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/mnist1d_convbase_official.py --seeds 0 1 2 3 4

Options change one thing at a time (kdforge's recipe side): --train-samples 3600 trains on kdforge's training
part of its 10 % stratified hold-out; --shuffle draws a new permutation every epoch; --kdforge-order draws the
very permutations kdforge's loader draws for that seed; --standardize feeds kdforge's standardized inputs (train
mean/std; the pickle is already standardized over all 5,000 samples). With --standardize --kdforge-order the
loop sees kdforge's batches and initial weights, so its accuracies should equal `kdforge train`'s at the
official recipe (Adam 0.01, wd 0, constant lr, 150 epochs, data.val_fraction=0) up to float round-off.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch
from torch import nn

from kdforge.data.checksums import read_verified
from kdforge.data.loader import epoch_seed
from kdforge.data.root import resolve_root
from kdforge.data.sources.mnist1d import FILE, PINNED_SHA256, load_arrays
from kdforge.data.splits import stratified_split
from kdforge.registry import DATASETS

from _mnist1d_official import OfficialConvBase as ConvBase  # bench/_mnist1d_official.py: the port, kept once


def accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (model(inputs).argmax(-1) == targets).float().mean().item()


def train_model(data: dict[str, torch.Tensor], model: nn.Module, args: argparse.Namespace,
                seed: int) -> list[tuple[int, float]]:
    """notebooks/train.py:42-78; returns [(step, test accuracy)] at every evaluation."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), args.lr, weight_decay=args.weight_decay)
    x_train, y_train, x_test, y_test = data["x"], data["y"], data["x_test"], data["y_test"]
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(args.total_steps + 1):
        bix = (step * args.batch_size) % len(x_train)
        if args.shuffle and bix == 0:  # a fresh permutation each epoch, as kdforge's loader does
            perm = torch.randperm(len(data["x"]), generator=gen)
            x_train, y_train = data["x"][perm], data["y"][perm]
        if args.kdforge_order and bix == 0:  # kdforge's own permutation of this epoch (data/loader.py)
            epoch = step * args.batch_size // len(x_train)
            perm = torch.randperm(len(data["x"]), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
            x_train, y_train = data["x"][perm], data["y"][perm]
        x, y = x_train[bix:bix + args.batch_size], y_train[bix:bix + args.batch_size]
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % args.eval_every == 0 or step == args.total_steps:  # (the official loop: multiples only)
            curve.append((step, accuracy(model, x_test, y_test)))
    return curve


def load(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    path = resolve_root(None) / FILE
    raw = load_arrays(read_verified(path, PINNED_SHA256), path)
    data = {k: torch.Tensor(np.asarray(raw[k])) for k in ("x", "x_test")}  # float32, as torch.Tensor(...) there
    if args.standardize:  # kdforge's inputs: the source's standardized float32 splits
        _, train, test = DATASETS["mnist1d"](path.parent.parent, {})
        data["x"], data["x_test"] = train.x, test.x
    data.update({k: torch.LongTensor(np.asarray(raw[k])) for k in ("y", "y_test")})
    if args.train_samples < len(data["y"]):  # kdforge's split: val_fraction = 1 - n/4000, split_seed 0
        kept, _ = stratified_split(data["y"], 1 - args.train_samples / len(data["y"]), 0)
        data["x"], data["y"] = data["x"][kept], data["y"][kept]
    return data


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--total-steps", type=int, default=6000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--shuffle", action="store_true")
    p.add_argument("--standardize", action="store_true")
    p.add_argument("--kdforge-order", action="store_true", help="kdforge's batches: its per-epoch permutation")
    args = p.parse_args(argv)
    data = load(args)
    finals, bests = [], []
    for seed in args.seeds:
        torch.manual_seed(seed)  # the notebook's set_seed(42) seeds numpy/random only at @7878d96 (utils.py:10-12)
        curve = train_model(data, ConvBase(output_size=10), args, seed)
        best_step, best = max(curve, key=lambda sa: sa[1])
        finals.append(curve[-1][1])
        bests.append(best)
        print(f"seed {seed}: final {curve[-1][1]:.1f} (step {curve[-1][0]}), best {best:.1f} (step {best_step}); "
              + " ".join(f"{a:.1f}" for _, a in curve), flush=True)
    for name, v in (("final", finals), ("best-over-training", bests)):
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{name}: {statistics.mean(v):.2f} ± {sd:.2f} over {len(v)} seeds")


if __name__ == "__main__":
    main(sys.argv[1:])
