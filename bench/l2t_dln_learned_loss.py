"""How L2T-DLN's learned loss changes during training: the loss network's value on a fixed grid of
(true-class, other-class) sigmoid scores, at several epochs of one run, as heat maps (docs/img/).

    python bench/l2t_dln_learned_loss.py configs/mnist1d_l2t_dln.yaml [--epochs N] [--snapshots 0,10,50,...]

The run is the config's (seed from the config), built as `kdforge distill` builds it; an epoch callback records
the grid after each chosen epoch (0 = before training) and the validation accuracy, so no checkpoint is needed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import kdforge.data as data  # noqa: E402
import kdforge.methods as methods  # noqa: E402
import kdforge.models as models  # noqa: E402
from kdforge.config import load_config  # noqa: E402
from kdforge.engine import Trainer, seed_everything  # noqa: E402
from kdforge.fileio import atomic_write_text  # noqa: E402

GRID = torch.linspace(0.0, 1.0, 41)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--snapshots", default=None, help="epochs to record, comma-separated (default: 6 spread out)")
    ap.add_argument("--out", type=Path, default=Path("docs/img/l2t_dln_learned_loss.png"))
    ap.add_argument("--run-dir", type=Path, default=Path("runs/l2t_dln_learned_loss"))
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides + [f"output_dir={args.run_dir}", "train.progress=false"])
    epochs = cfg.train.epochs
    chosen = ([int(e) for e in args.snapshots.split(",")] if args.snapshots
              else sorted({0, epochs // 20, epochs // 8, epochs // 4, epochs // 2, epochs}))
    bundle = data.build(cfg.data)
    seed_everything(cfg.seed)
    student = models.build(cfg.student, bundle.spec, "student")
    method = methods.build(cfg.method, student, None, methods.Setup.for_data(bundle.spec, bundle.train))
    true_p, other_p = torch.meshgrid(GRID, GRID, indexing="ij")
    snaps = {0: method.learned_loss(true_p, other_p)} if 0 in chosen else {}
    accs: dict[int, float] = {}

    def record(epoch: int, rec: dict) -> None:  # epoch is 0-based: after it, epoch + 1 epochs are done
        if epoch + 1 in chosen:
            snaps[epoch + 1] = method.learned_loss(true_p, other_p)
        if "val_top1" in rec:
            accs[epoch + 1] = rec["val_top1"]

    trainer = Trainer(method, bundle, cfg.recipe, args.run_dir, cfg.data.batch_size, cfg.data.eval_batch_size,
                      cfg.data.augment, callbacks=(record,))
    start = time.perf_counter()
    result = trainer.fit(overwrite=True)
    train_time = time.perf_counter() - start
    plot(snaps, accs, args.out, f"{cfg.name}: L2T-DLN learned loss, test top-1 {result.test['top1']:.1%}")
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(
        {"grid": GRID.tolist(), "snapshots": {e: s.tolist() for e, s in snaps.items()}, "val_top1": accs,
         "test": dict(result.test), "train_time_s": train_time, "seed": cfg.seed, "config": str(args.config), "overrides": args.overrides}))
    print(f"wrote {args.out}; test top-1 {result.test['top1']:.4f}")


def plot(snaps: dict[int, torch.Tensor], accs: dict[int, float], out: Path, title: str) -> None:
    """One heat map per snapshot (x: other-class score, y: true-class score), each on its own colour scale (the
    loss's scale is free: only its shape steers the student), and a curve along the diagonal cut."""
    epochs = sorted(snaps)
    fig, axes = plt.subplots(1, len(epochs) + 1, figsize=(3.1 * (len(epochs) + 1), 3.0))
    for ax, e in zip(axes, epochs):
        im = ax.imshow(snaps[e].numpy(), origin="lower", extent=(0, 1, 0, 1), cmap="viridis", aspect="auto")
        ax.contour(GRID.numpy(), GRID.numpy(), snaps[e].numpy(), levels=8, colors="white", linewidths=0.5)
        acc = f", val {accs[e]:.0%}" if e in accs else ""
        ax.set_title(f"epoch {e}{acc}", fontsize=9)
        ax.set_xlabel("other-class score σ(z_j)", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].set_ylabel("true-class score σ(z_y)", fontsize=8)
    ax = axes[-1]
    mid = len(GRID) // 2
    for e in epochs:  # loss along the true-class score with the other class at 0.5, normalised to [0, 1]
        cut = snaps[e][:, mid]
        ax.plot(GRID.numpy(), ((cut - cut.min()) / (cut.max() - cut.min() + 1e-12)).numpy(), label=f"ep {e}")
    ax.set_xlabel("true-class score (other = 0.5)", fontsize=8)
    ax.set_title("normalised cut", fontsize=9)
    ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
