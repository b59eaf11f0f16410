"""How L2T-DLN's learned loss changes during training, from finished (or running) runs: the loss network's value
on the 5 x 5 grid of (true-class, other-class) sigmoid scores that the method logs at the start and after every
epoch (`ctx.log`, keys dln_tXXX_oYYY), for several seeds, as heat maps on ONE shared colour scale, and the loss's
preference L(0.95, 0.05) - L(0.05, 0.95) over training (negative: lower loss for a correct prediction).

    python bench/l2t_dln_learned_loss.py runs/results/l2t_dln_mnist1d/<row>/seed{0,1,2} \
        --out docs/img/l2t_dln_learned_loss.png [--epochs 0,10,30,60,126] [--table]

Every run folder needs the metrics.jsonl of an l2t_dln run (any loop or init); a sidecar JSON (--out with .json)
keeps the numbers plotted. Nothing is trained here.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import SymLogNorm  # noqa: E402

from kdforge.fileio import atomic_write_text  # noqa: E402

GRID = (0.05, 0.275, 0.5, 0.725, 0.95)  # kdforge.methods.l2t_dln.GRID (not imported: this reads logs only)
KEYS = [[f"dln_t{round(t * 1000):03d}_o{round(o * 1000):03d}" for o in GRID] for t in GRID]


def read_run(run: Path) -> dict[str, Any]:
    """{epochs done: 5 x 5 grid}, {epochs done: val top-1}, the preference over epochs, the test top-1 if done."""
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    grids: dict[int, list[list[float]]] = {}
    accs: dict[int, float] = {}
    records: dict[int, dict[str, float]] = {}
    for e in events:  # a resumed run may repeat an epoch's events: the last one wins
        if e["event"] == "method" and KEYS[0][0] in e:
            done = 0 if e["step"] == 0 and e["epoch"] == 0 and 0 not in grids else e["epoch"] + 1
            grids[done] = [[e[k] for k in row] for row in KEYS]
        elif e["event"] == "epoch":
            records[e["epoch"] + 1] = e
            if "val_top1" in e:
                accs[e["epoch"] + 1] = e["val_top1"]
    if not grids:
        raise SystemExit(f"{run}: no learned-loss grid in metrics.jsonl (is it an l2t_dln run of this version?)")
    summary = run / "summary.json"
    test = json.loads(summary.read_text())["test"].get("top1") if summary.exists() else None
    return {"run": str(run), "grids": grids, "val_top1": accs, "test_top1": test, "records": records,
            "preference": {d: g[-1][0] - g[0][-1] for d, g in sorted(grids.items())}}


def print_table(r: dict[str, Any]) -> None:
    """Per epoch: the loss's preference and range on the grid, its slopes along each score, and the epoch's mean
    logit statistics (true vs other classes) and accuracies: a sign flip shows as preference > 0 and
    sig_other > sig_true, a flat loss as a tiny range."""
    print(f"# {r['run']}  (test top-1: {r['test_top1']})")
    print("epochs | L(.95,.05)-L(.05,.95) | grid min .. max | dL/d true (o=.5) | dL/d other (t=.5) | logit true/other"
          " | sigmoid true/other | inner top-1 | val top-1")
    for done, g in sorted(r["grids"].items()):
        flat = [v for row in g for v in row]
        d_true, d_other = (g[-1][2] - g[0][2]) / 0.9, (g[2][-1] - g[2][0]) / 0.9
        rec = r["records"].get(done, {})
        stats = "  ".join(f"{rec[a]:+.3f}/{rec[b]:+.3f}" if a in rec else "-"
                          for a, b in (("logit_true", "logit_other"), ("sig_true", "sig_other")))
        top1 = rec.get("inner_top1", rec.get("train_top1"))
        val = r["val_top1"].get(done)
        print(f"{done:4d} | {r['preference'][done]:+.4g} | {min(flat):+.4g} .. {max(flat):+.4g} | {d_true:+.4g} | "
              f"{d_other:+.4g} | {stats} | {'-' if top1 is None else f'{top1:.3f}'} | "
              f"{'-' if val is None else f'{val:.3f}'}")


def chosen_epochs(available: list[int], wanted: str | None) -> list[int]:
    if wanted:
        picks = [int(x) for x in wanted.split(",")]
        missing = [p for p in picks if p not in available]
        if missing:
            raise SystemExit(f"epochs {missing} were not logged; logged: {available[0]}..{available[-1]}")
        return picks
    last = available[-1]
    return sorted({min(available, key=lambda a: abs(a - f * last)) for f in (0, 0.05, 0.15, 0.35, 0.65, 1.0)})


def short(v: float) -> str:
    """At most ~5 characters, so a 5 x 5 panel's numbers do not run into each other."""
    if v != 0 and (abs(v) < 0.01 or abs(v) >= 1e4):
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2g}"


def plot(runs: list[dict[str, Any]], epochs: list[int], out: Path, title: str) -> None:
    """Rows: runs (one run: its epochs wrapped 3 to a row); columns: epochs; one diverging symlog colour scale for
    every panel (blue < 0 < red); a last row with each run's preference L(0.95, 0.05) - L(0.05, 0.95)."""
    values = [v for r in runs for e in epochs for row in r["grids"][e] for v in row]
    values += [v for r in runs for v in r["preference"].values()]
    vmax = max(abs(v) for v in values) or 1.0
    norm = SymLogNorm(linthresh=max(vmax * 1e-3, 1e-6), vmin=-vmax, vmax=vmax, base=10)
    decades = [10.0 ** k for k in range(math.ceil(math.log10(norm.linthresh * 10)), math.floor(math.log10(vmax)) + 1)]
    ticks = [-d for d in decades[::-1]] + [0.0] + decades
    panels = [(r, e) for r in runs for e in epochs]
    n_cols = len(epochs) if len(runs) > 1 else min(3, len(epochs))
    n_rows = math.ceil(len(panels) / n_cols)
    fig = plt.figure(figsize=(2.5 * n_cols + 1.2, 2.5 * n_rows + 2.8))
    spec = fig.add_gridspec(n_rows + 1, n_cols + 1, width_ratios=[1] * n_cols + [0.08],
                            height_ratios=[1] * n_rows + [1.1])
    labels = [f"{g:.2f}" for g in GRID]
    image = None
    for k, (r, e) in enumerate(panels):
        i, j = divmod(k, n_cols)
        ax = fig.add_subplot(spec[i, j])
        grid = r["grids"][e]
        image = ax.imshow(grid, origin="lower", cmap="RdBu_r", norm=norm)
        for a in range(5):
            for b in range(5):
                ax.text(b, a, short(grid[a][b]), ha="center", va="center", fontsize=5.5)
        acc = r["val_top1"].get(e)
        ax.set_title(f"{Path(r['run']).name}, epoch {e}" + (f", val {acc:.0%}" if acc is not None else ""), fontsize=8)
        ax.set_xticks(range(5), labels, fontsize=6)
        ax.set_yticks(range(5), labels if j == 0 else [], fontsize=6)
        ax.set_xlabel("other-class score σ(z_j)", fontsize=7)
        if j == 0:
            ax.set_ylabel("true-class score σ(z_y)", fontsize=7)
    cbar = fig.colorbar(image, cax=fig.add_subplot(spec[:n_rows, -1]), ticks=ticks)
    cbar.set_label("loss-network output (symlog, shared)", fontsize=8)
    ax = fig.add_subplot(spec[n_rows, :-1])
    for r in runs:
        pref = r["preference"]
        test = f", test {r['test_top1']:.1%}" if r["test_top1"] is not None else ""
        ax.plot(list(pref), list(pref.values()), label=f"{Path(r['run']).name}{test}")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_yscale("symlog", linthresh=norm.linthresh)
    ax.set_yticks(ticks)
    ax.set_xlabel("epochs done", fontsize=8)
    ax.set_ylabel("L(0.95, 0.05) − L(0.05, 0.95)", fontsize=8)
    ax.set_title("preference for the correct prediction (< 0: the loss is lower when the true class wins)", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run folders of l2t_dln runs (one per seed)")
    ap.add_argument("--epochs", default=None, help="epochs (done) to show, comma-separated; 0 = the initial loss")
    ap.add_argument("--out", type=Path, default=Path("docs/img/l2t_dln_learned_loss.png"))
    ap.add_argument("--label", default="", help="what the runs are (config, loop, init), for the title")
    ap.add_argument("--table", action="store_true", help="also print each run's numbers per epoch")
    args = ap.parse_args()
    runs = [read_run(r) for r in args.runs]
    if args.table:
        for r in runs:
            print_table(r)
    common = sorted(set.intersection(*(set(r["grids"]) for r in runs)))
    epochs = chosen_epochs(common, args.epochs)
    label = f"{args.label}\n" if args.label else ""
    title = (f"{label}L2T-DLN learned loss DLN(σ(z_y), σ(z_j), 1, 0) on a 5×5 grid of true/other-class scores\n"
             f"n = {len(runs)} run{'s' if len(runs) > 1 else ''} (rows) × epochs done (columns), one colour scale")
    plot(runs, epochs, args.out, title)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(
        {"grid": GRID, "epochs": epochs,
         "runs": [{**{k: v for k, v in r.items() if k != "records"}, "grids": {e: r["grids"][e] for e in epochs}}
                  for r in runs]},
        indent=1))
    print(f"wrote {args.out} ({len(runs)} runs, epochs {epochs})")


if __name__ == "__main__":
    main()
