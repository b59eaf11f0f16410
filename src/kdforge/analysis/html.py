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


def _reliability(ax: Any, bins: dict[str, list[float]], label: str, color: str) -> None:
    n = len(bins["count"])
    centers = [(i + 0.5) / n for i in range(n)]
    keep = [i for i in range(n) if bins["count"][i] > 0]
    ax.plot([0, 100], [0, 100], ls="--", color="#999", lw=1)
    ax.bar([100 * centers[i] for i in keep], [100 * bins["accuracy"][i] for i in keep], width=100 / n, alpha=0.35,
           color=color, edgecolor=color)
    ax.plot([100 * bins["confidence"][i] for i in keep], [100 * bins["accuracy"][i] for i in keep], "o-", ms=3,
            color=color)
    ax.set(xlim=(0, 100), ylim=(0, 100), title=label, xlabel="confidence %")


def reliability_diagrams(panels: list[tuple[str, dict[str, list[float]], float, str]]) -> str:
    """One reliability diagram per (label, bins, ECE, colour), side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8), squeeze=False)
    for i, (label, bins, ece, color) in enumerate(panels):
        _reliability(axes[0][i], bins, f"{label}\nECE {ece * 100:.1f}%", color)
    axes[0][0].set_ylabel("accuracy %")
    fig.suptitle("test samples binned by confidence (bars: accuracy per bin; dashed: perfect calibration)",
                 fontsize=9)
    return _png(fig)


def _central(values: Sequence[float]) -> tuple[float, float]:
    """Axis limits holding the central 98 % of the values and zero: a few extreme samples would hide the rest."""
    ordered = sorted(values)
    lo, hi = ordered[int(0.01 * (len(ordered) - 1))], ordered[int(0.99 * (len(ordered) - 1))]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.05 * (hi - lo) or 1e-3
    return lo - pad, hi + pad


def per_sample_shifts(vs: list[dict[str, Any]]) -> str:
    """Per test sample, (bias, variance) of each method minus the reference's (the first variant)."""
    plt = _plt()
    ref = vs[0]["per_sample"]
    others = list(enumerate(vs))[1:]
    fig, axes = plt.subplots(1, len(others), figsize=(2.7 * len(others) + 0.6, 2.9), squeeze=False, sharey=True)
    for ax, (i, v) in zip(axes[0], others):
        db = [b - rb for b, rb in zip(v["per_sample"]["bias"], ref["bias"])]
        dv = [x - rx for x, rx in zip(v["per_sample"]["variance"], ref["variance"])]
        ax.scatter(db, dv, s=3, alpha=0.35, color=COLORS[i % len(COLORS)], linewidths=0)
        ax.axhline(0, color="#999", lw=0.8)
        ax.axvline(0, color="#999", lw=0.8)
        ax.set(title=v["label"], xlabel="Δ bias", xlim=_central(db), ylim=_central(dv))
    axes[0][0].set_ylabel("Δ variance")
    fig.suptitle(f"one dot per test sample (n = {len(ref['bias'])}); change against {vs[0]['label']}", fontsize=9)
    return _png(fig)


def _bias_variance_section(path: Path, r: dict[str, Any]) -> tuple[str, str]:
    plt = _plt()
    vs = r["variants"]
    labels = [v["label"] for v in vs]
    members = f'{r["parts"]} {"bootstrap resamples" if r["bootstrap"] else "disjoint parts"} x {r["repeats"]} repeat(s)'
    intro = (f'<p class="note">{r["data"]}, student {r["student"]}, {r["epochs"]} epochs; each method trains {members} '
             f'of the training split; bias and variance of the test cross-entropy over {r["test_samples"]} samples '
             "(Yang et al. 2020: bias = NLL of the normalized geometric mean of the members, variance = mean KL from "
             "it to each member; risk = bias + variance).</p>")
    rows = [[v["label"], _pm(v["top1"], 100, 2), f'{v["ensemble_top1"] * 100:.2f}', f'{v["bias"]:.3f}',
             f'{v["variance"]:.3f}', f'{v["risk"]:.3f}', f'{v["mse_bias"]:.3f}', f'{v["mse_variance"]:.3f}',
             _pm(v["ece"], 100, 2),
             "–" if v["reg_fraction_final"] is None else f'{v["reg_fraction_final"] * 100:.1f}'] for v in vs]
    if "teacher" in r:
        t = r["teacher"]
        rows.insert(0, [f'teacher ({t["model"]})', f'{t["top1"] * 100:.2f}', "–", "–", "–", f'{t["nll"]:.3f}', "–",
                        "–", f'{t["ece"] * 100:.2f}', "–"])
    table = _table(["method", "top-1 % (member)", "top-1 % (ensemble)", "CE bias", "CE variance", "CE risk",
                    "MSE bias", "MSE variance", "ECE %", "reg. samples % (last epoch)"], rows)
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.3 * len(vs) + 2.2), sharey=True)
    y = list(range(len(vs)))
    for ax, key, title in zip(axes, ("bias", "variance", "risk"), ("bias", "variance", "risk = bias + variance")):
        vals = [v[key] for v in vs]
        ax.barh(y, vals, color=[COLORS[i % len(COLORS)] for i in y], height=0.6)  # bars from zero: lengths compare
        for yi, val in zip(y, vals):
            ax.text(val, yi, f" {val:.3f}", va="center", fontsize=7)
        ax.set_xlim(0, max(vals) * 1.22 if max(vals) > 0 else 1)
        ax.set(title=title, xlabel="test cross-entropy")
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"one number per method, from its {r['parts'] * r['repeats']} members on {r['test_samples']} test "
                 "samples (no interval: one decomposition per method)", fontsize=9)
    bars = _png(fig)
    quad = [[v["label"]] + [f'{v["vs_reference"][k] * 100:.1f}' for k in
                            ("bias_up_var_down", "bias_up_var_up", "bias_down_var_down", "bias_down_var_up")]
            for v in vs[1:] if "vs_reference" in v]
    quad_html = ("<h3>Sample-wise trade-off against " + html.escape(vs[0]["label"]) + "</h3>"
                 '<p class="note">Share of test samples (%) by how their bias and variance move relative to the '
                 "reference (Zhou et al. 2021, Sec. 3: soft labels trade bias for variance sample by sample), and "
                 "each test sample's change (axes cover the central 98 %).</p>"
                 + _table(["method", "bias ↑ var ↓", "bias ↑ var ↑", "bias ↓ var ↓", "bias ↓ var ↑"], quad)
                 + per_sample_shifts(vs) if quad else "")
    reg = [(i, v) for i, v in enumerate(vs) if v["reg_fraction_per_epoch"]]  # i keeps each method's colour
    reg_html = ""
    if reg:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
        for i, v in reg:
            curve = v["reg_fraction_per_epoch"]
            ax1.plot(range(1, len(curve) + 1), [c * 100 for c in curve], color=COLORS[i % len(COLORS)],
                     label=v["label"])
            ax2.errorbar(v["reg_fraction_final"] * 100, v["top1"][0] * 100, yerr=v["top1"][1] * 100, fmt="o",
                         color=COLORS[i % len(COLORS)], capsize=3, label=v["label"])
        members = r["parts"] * r["repeats"]
        ax1.set(xlabel="epoch", ylabel="% of training samples",
                title=f"regularization samples per epoch (mean of {members} members)")
        ax2.set(xlabel="regularization samples % (last epoch)", ylabel="test top-1 % of a member",
                title=f"vs final accuracy (whiskers ± 1 std, n = {members})")
        ax1.title.set_fontsize(9)
        ax2.title.set_fontsize(9)
        ax1.legend(fontsize=8)
        _epoch_axis(ax1)
        reg_html = ("<h3>Regularization samples</h3><p class=\"note\">Training samples on which the student already "
                    "fits the label better than the teacher at the distillation temperature (counted by KD and WSL "
                    "every epoch); Zhou et al. report that more of them goes with lower accuracy at a fixed "
                    "temperature.</p>" + _png(fig))
    panels = [(v["label"], v["reliability"], v["ece"][0], COLORS[i % len(COLORS)]) for i, v in enumerate(vs)]
    if "teacher" in r:
        panels.insert(0, ("teacher", r["teacher"]["reliability"], r["teacher"]["ece"], TEACHER_COLOR))
    groups = {v["label"]: [_located(m["run_dir"], path / Path(m["run_dir"]).parent.name / Path(m["run_dir"]).name)
                           for m in v["members"]] for v in vs}
    body = (intro + table + bars + quad_html + reg_html
            + "<h3>Reliability diagrams (test, all members pooled)</h3>" + reliability_diagrams(panels)
            + "<h3>Learning curves (mean over members)</h3>" + learning_curves(groups))
    return f"Bias and variance: {r['name']} ({path.name})", body


def _inside(lambdas: Sequence[float], lam: float) -> bool:
    return min(lambdas) <= lam <= max(lambdas)


def _mark_optimum(ax: Any, lambdas: Sequence[float], lam: float, name: str, color: str, style: str) -> None:
    """A vertical line at the optimum when it lies in the sweep; otherwise only a legend entry saying where it is
    (a flat curve puts it far away, and a line there would squash the plot)."""
    if _inside(lambdas, lam):
        ax.axvline(lam, color=color, ls=style, label=f"{name} {lam:.2f}")
    else:
        ax.plot([], [], ls=style, color=color, label=f"{name} {lam:.3g} (outside the sweep)")


def _grad_variance_section(path: Path, r: dict[str, Any]) -> tuple[str, str]:
    plt = _plt()
    curves = r["curves"]
    linear = any("predicted" in c for c in curves.values())
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    rows = []
    for ax, (name, c) in zip(axes[0], curves.items()):
        ax.plot(c["lambdas"], c["variance"], "o-", ms=3, color=COLORS[0], label="measured")
        if "predicted" in c:
            ax.plot(c["lambdas"], c["predicted"], "-", color=COLORS[1], label="predicted (closed form)")
            _mark_optimum(ax, c["lambdas"], c["predicted_lam_star"], "predicted λ*", COLORS[1], ":")
        _mark_optimum(ax, c["lambdas"], c["lam_star"], "λ*", COLORS[3], "--")
        if _inside(c["lambdas"], c["lam_star"]):
            ax.axhline(c["floor"], color="#999", ls="--", lw=1, label=f'floor {c["floor"]:.3g}')
        ax.set(title=name, xlabel="λ (weight of the KD term)", ylabel="gradient variance")
        ax.legend(fontsize=7)
        ratio = f'{c["floor"] / c["variance"][0] * 100:.1f}' if c["variance"][0] else "–"
        if 0.0 <= c["lam_star"] <= 1.0:
            lam, floor = f'{c["lam_star"]:.3f}', f'{c["floor"]:.4g}'
        else:  # the quadratic's minimum lies at a negative weight or past CE's removal: no loss reaches it
            lam, floor, ratio = (f'{c["lam_star"]:.3g} (outside [0, 1]: not reachable)',
                                 f'{c["floor"]:.4g} (extrapolated)', f"{ratio} (extrapolated)")
        rows.append([name, f'{c["variance"][0]:.4g}', f'{min(c["variance"]):.4g}', lam, floor, ratio]
                    + ([f'{c["predicted_lam_star"]:.3f}'] if "predicted" in c else []))
    head = ["checkpoint", "Var at λ=0", "min measured", "λ* (from the batches)", "floor", "floor / Var(0) %"]
    if linear:
        head.append("λ* predicted")
    loss = "(1-λ)·½(x·w-y)² + λ·½(x·w-x·w_t)²" if linear else f'(1-λ)·CE + λ·T²·KL at T = {r.get("temperature", 1)}'
    intro = (f'<p class="note">{html.escape(r["data"])}: student {r["student"]}, teacher {html.escape(r["teacher"])}; '
             f'variance (trace of the covariance) of the gradient of {loss} over {r["batches"]} mini-batches '
             f'of {r["batch_size"]}. Safaryan et al. 2023: KD acts as a control variate, so the variance falls to a '
             "floor at λ* and rises again; the floor is above zero unless the teacher is perfect. λ* and the floor come from "
             "the quadratic fitted to the batches; outside λ ∈ [0, 1] they are extrapolations no weighting reaches, "
             "and the lowest reachable variance is the column \"min measured\".</p>")
    fig.suptitle(f"one estimate per λ over {r['batches']} mini-batches of {r['batch_size']} (no interval); "
                 "λ* outside the sweep is only named in the legend", fontsize=9)
    return f"Gradient variance: {r['name']} ({path.name})", intro + _table(head, rows) + _png(fig)


def _section(path: Path) -> tuple[str, str]:
    if (path / "analysis.json").exists():
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

