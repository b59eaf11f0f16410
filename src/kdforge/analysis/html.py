"""`kdforge report RUN_DIR...`: one self-contained HTML page (PNG plots embedded as base64, no external files)
for run folders (summary.json), comparisons (results.json) and analyses (analysis.json)."""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kdforge.errors import ConfigError, require_extra
from kdforge.fileio import atomic_write_text
from kdforge.report import COLUMNS

TEACHER_COLOR = "#555555"
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1f2430}
header{background:#1f2a44;color:#fff;padding:22px 40px}header h1{margin:0;font-size:26px}
header p{margin:6px 0 0;color:#c9d1e4;font-size:14px}
main{max-width:1100px;margin:0 auto;padding:20px 40px 60px}
nav{background:#fff;border-radius:8px;padding:12px 20px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
nav a{margin-right:18px;color:#3355aa;text-decoration:none;font-size:14px}
section{background:#fff;border-radius:8px;padding:18px 26px;margin:22px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{margin-top:4px;font-size:21px;border-bottom:2px solid #e4e7ee;padding-bottom:6px}h3{font-size:16px;margin:18px 0 6px}
p.note{color:#555e70;font-size:14px;line-height:1.5;max-width:900px}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{padding:6px 9px;border-bottom:1px solid #e4e7ee;text-align:right}td{white-space:nowrap}
th{background:#f0f2f7;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}tr:hover td{background:#fafbfd}
img{max-width:100%;display:block;margin:10px 0}.muted{color:#8a92a3;font-size:12px}
"""


def _png(fig: Any) -> str:
    """An <img> holding the figure as an embedded PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _plt() -> Any:
    matplotlib = require_extra("matplotlib", "report", "the HTML report's plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                         "grid.alpha": 0.3, "font.size": 10})
    return plt


def _cells(row: Sequence[Any], tag: str) -> str:
    return "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in row)


def _epoch_axis(*axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = _cells
    return (f"<div class=\"scroll\"><table><tr>{cells(head, 'th')}</tr>"
            + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows) + "</table></div>")


def _pm(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return f"{value[0] * scale:.{digits}f} ± {value[1] * scale:.{digits}f}"
    return f"{value * scale:.{digits}f}"


def _located(recorded: str, inside: Path) -> Path:
    """A run folder as recorded (relative to where the study ran), else where it sits inside the study's folder:
    the report may be written from another directory, or of a folder that was moved."""
    return Path(recorded) if Path(recorded).exists() else inside


# ---- learning curves ----------------------------------------------------------------------------------------
def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    by_epoch = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "epoch":
            by_epoch[rec["epoch"]] = rec  # a resumed epoch's record replaces the interrupted one
    return [by_epoch[e] for e in sorted(by_epoch)]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, ((sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0)


def _band(ax: Any, xs: Sequence[float], per_run: Sequence[Sequence[float]], color: str, label: str | None = None,
          **kw: Any) -> None:
    """The mean over runs as a line and, with more than one run, mean ± 1 std shaded."""
    stats = [_mean_std([r[i] for r in per_run]) for i in range(len(xs))]
    ax.plot(xs, [m for m, _ in stats], color=color, label=label, **kw)
    if len(per_run) > 1:
        ax.fill_between(xs, [m - sd for m, sd in stats], [m + sd for m, sd in stats], color=color, alpha=0.2, lw=0)


def learning_curves(groups: dict[str, list[Path]]) -> str:
    """Training loss per epoch, each group in its own panel (methods' losses differ in scale and terms), and
    validation top-1 % of every group in one panel; lines are the mean over a group's runs, the band ± 1 std."""
    found = {label: [r for r in (_epochs(d) for d in dirs) if r] for label, dirs in groups.items()}
    found = {label: runs for label, runs in found.items() if runs}
    if not found:
        return '<p class="muted">no metrics.jsonl found in the run folders</p>'
    plt = _plt()
    has_val = any("val_top1" in e for runs in found.values() for r in runs for e in r)
    panels = len(found) + int(has_val)
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 0.4, 2.7 * rows + 0.5), squeeze=False)
    flat = [ax for row in axes for ax in row]
    val_ax = flat[len(found)] if has_val else None
    for i, (label, runs) in enumerate(found.items()):
        color = COLORS[i % len(COLORS)]
        n = min(len(r) for r in runs)
        xs = list(range(1, n + 1))
        ax = flat[i]
        _band(ax, xs, [[r[e]["loss"] for e in range(n)] for r in runs], color)
        ax.set(title=f"{label}: training loss (n = {len(runs)})", ylabel="loss (sum of terms)")
        ax.title.set_fontsize(9)
        val = [e for e in range(n) if all("val_top1" in r[e] for r in runs)]
        if val_ax is not None and val:
            _band(val_ax, [e + 1 for e in val], [[100 * r[e]["val_top1"] for e in val] for r in runs], color,
                  label=f"{label} (n = {len(runs)})", marker="o", ms=3)
    if val_ax is not None:
        val_ax.set(ylabel="top-1 %", title="validation top-1 %")
        val_ax.title.set_fontsize(9)
        val_ax.legend(fontsize=7)
    for ax in flat[panels:]:
        ax.set_visible(False)
    _epoch_axis(*flat[:panels])
    fig.suptitle("line: mean over the n runs; band: ± 1 std over them (none for n = 1); each loss on its own scale",
                 fontsize=9)
    return _png(fig)


# ---- sections -----------------------------------------------------------------------------------------------
def _run_section(path: Path) -> tuple[str, str]:
    s = json.loads((path / "summary.json").read_text())
    test = s.get("test", {})
    rows = [[title, f"{test[k] * scale:.2f}" if scale == 100 else f"{test[k]:.3f}"] for k, title, scale in COLUMNS
            if k in test]
    body = (f'<p class="note">{html.escape(s["method"])} seed {s["seed"]}, student {s["student"]["model"]} '
            f'({s["student"]["params"]:,} parameters), {s["epochs"]} epochs, {s["train_time_s"]:.1f} s.</p>'
            + _table(["test metric", "value"], rows) + learning_curves({s["method"]: [path]}))
    return f"Run {path.name}", body


def _compare_section(path: Path) -> tuple[str, str]:
    from kdforge.report import plot_comparison

    results = json.loads((path / "results.json").read_text())
    rows = results["rows"]
    head = ["method", "seeds"] + [t for _, t, _ in COLUMNS]
    table = [[r["method"], r["seeds"]] + [_pm(r.get(k), s, 2 if s == 100 else 3) for k, _, s in COLUMNS]
             for r in rows]
    buf = io.BytesIO()
    plot_comparison(rows, buf, path.name)  # type: ignore[arg-type]  # savefig takes a file object as well
    img = f'<img alt="comparison" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    groups = {name: [_located(s["run_dir"], path / name / f'seed{s["seed"]}') for s in runs]
              for name, runs in results.get("runs", {}).items()}
    body = ('<p class="note">Test metrics, mean ± std over seeds (% except NLL and KL); in the plot, each dot is '
            "the mean over seeds and its whiskers the 95 % t-interval of that mean.</p>" + _table(head, table) + img
            + "<h3>Learning curves (mean over seeds)</h3>" + learning_curves(groups))
    return f"Comparison {path.name}", body



def _section(path: Path) -> tuple[str, str]:
    if (path / "analysis.json").exists():
        from kdforge.analysis.html_studies import _bias_variance_section, _grad_variance_section

        r = json.loads((path / "analysis.json").read_text())
        return (_bias_variance_section if r["kind"] == "bias_variance" else _grad_variance_section)(path, r)
    if (path / "results.json").exists():
        return _compare_section(path)
    if (path / "summary.json").exists():
        return _run_section(path)
    raise ConfigError(f"{path} holds no analysis.json, results.json or summary.json; give a folder written by "
                      "kdforge analyze, compare, train or distill")


def write_report(paths: Sequence[Path], out: Path, title: str = "kdforge report") -> Path:
    """Render every folder's section into one HTML file at `out` (written atomically)."""
    sections = [_section(Path(p)) for p in paths]  # every folder checked before anything is written
    nav = "".join(f'<a href="#s{i}">{html.escape(name)}</a>' for i, (name, _) in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{html.escape(name)}</h2>{content}</section>'
                   for i, (name, content) in enumerate(sections))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<link rel="icon" href="data:,"><style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>'
            f"<p>{len(sections)} folder(s) · written {stamp} by kdforge report</p></header><main><nav>{nav}</nav>"
            f"{body}</main></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out

