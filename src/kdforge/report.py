"""Tables and plots of results: mean ± std over seeds, as Markdown/CSV and a PNG."""
from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdforge.errors import require_extra

COLUMNS = [("top1", "top-1 %", 100.0), ("nll", "NLL", 1.0), ("ece", "ECE %", 100.0),
           ("agreement", "agree %", 100.0), ("kl_ts", "KL(t||s)", 1.0)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(label: str, summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One table row from the test metrics of several seeds' summaries."""
    row: dict[str, Any] = {"method": label, "seeds": len(summaries)}
    for key, _, _ in COLUMNS:
        vals = [s["test"][key] for s in summaries if key in s["test"]]
        if vals:
            row[key] = mean_std(vals)
    times = [s["train_time_s"] for s in summaries if s.get("train_time_s") is not None]
    if times:
        row["time_s"] = mean_std(times)
    return row


def _cell(row: dict[str, Any], key: str, scale: float) -> str:
    if key not in row:
        return "–"
    mean, std = row[key]
    digits = 2 if scale == 100.0 else 3
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}" if row["seeds"] > 1 else f"{mean * scale:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ["method", "seeds"] + [title for _, title, _ in COLUMNS] + ["train time s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["method"], str(row["seeds"])] + [_cell(row, k, s) for k, _, s in COLUMNS]
        cells.append(f"{row['time_s'][0]:.1f}" if "time_s" in row else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "seeds"] + [f"{k}_{stat}" for k, _, _ in COLUMNS for stat in ("mean", "std")]
                        + ["time_s_mean"])
        for row in rows:
            stats = [v for k, _, _ in COLUMNS for v in row.get(k, (float("nan"), float("nan")))]
            writer.writerow([row["method"], row["seeds"], *stats, row.get("time_s", (float("nan"),))[0]])


def interval(row: dict[str, Any], key: str, scale: float = 1.0) -> tuple[float, float]:
    """(mean, half-width of its 95 % Student-t interval) of a row's metric from its mean, std and seed count; the
    half-width is 0 for a single seed (nothing to estimate it from)."""
    from kdforge.plans.stats import t975

    mean, std = row[key]
    n = int(row["seeds"])
    return mean * scale, (t975(n - 1) * std / math.sqrt(n) * scale if n > 1 else 0.0)


def plot_comparison(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Top-1, NLL and ECE per method as horizontal dot plots, methods sorted by mean top-1 (best at the top, the
    same order in every panel): each dot the mean over seeds, its whiskers the 95 % t-interval of that mean;
    single-seed rows (a teacher) are grey diamonds without whiskers."""
    matplotlib = require_extra("matplotlib", "report", "the comparison plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [c for c in COLUMNS if c[0] in ("top1", "nll", "ece")]
    order = sorted(rows, key=lambda r: r["top1"][0] if "top1" in r else float("-inf"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.6, 0.32 * len(rows) + 1.5),
                             sharey=True, squeeze=False)
    for ax, (key, label, scale) in zip(axes[0], panels):
        for y, r in enumerate(order):
            if key not in r:
                continue
            mean, half = interval(r, key, scale)
            if r["seeds"] > 1:
                ax.errorbar(mean, y, xerr=half, fmt="o", ms=5, color="C0", capsize=3)
            else:
                ax.plot(mean, y, "D", ms=5, color="0.45")
        ax.set_title(label + (" (higher is better)" if key == "top1" else " (lower is better)"), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.grid(axis="y", alpha=0.15)
    axes[0][0].set_yticks(range(len(order)), [r["method"] for r in order])
    axes[0][0].set_ylim(-0.6, len(order) - 0.4)
    seeds = sorted({int(r["seeds"]) for r in rows if r["seeds"] > 1})
    n = "/".join(str(s) for s in seeds) or "1"
    fig.suptitle(f"{title}\ndot: mean over n = {n} seeds; whiskers: 95 % t-interval of the mean; "
                 "grey diamond: a single run", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
