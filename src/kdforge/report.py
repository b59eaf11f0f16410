"""Tables and plots of results: mean ± std over seeds, as Markdown/CSV and a PNG."""
from __future__ import annotations

import csv
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


def plot_comparison(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Bars of mean top-1, NLL and ECE per method with ±1 std error bars."""
    matplotlib = require_extra("matplotlib", "report", "the comparison plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [c for c in COLUMNS if c[0] in ("top1", "nll", "ece")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    names = [r["method"] for r in rows]
    colors = plt.cm.tab10.colors
    for ax, (key, label, scale) in zip(axes, panels):
        means = [r[key][0] * scale if key in r else 0 for r in rows]
        stds = [r[key][1] * scale if key in r else 0 for r in rows]
        ax.bar(names, means, yerr=stds, capsize=4, color=colors[: len(rows)])
        ax.set_title(label)
        if key == "top1":
            lo = min(m - s for m, s in zip(means, stds))
            ax.set_ylim(max(0, lo - 3), min(100, max(means) + 2))
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
