"""The sections of `kdforge report` for the analyses (`kdforge analyze`): bias-variance (reliability diagrams,
per-sample shifts) and gradient variance (the measured curve and its optima); the page and the other sections are
in analysis/html.py."""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdforge.analysis.html import COLORS, TEACHER_COLOR, _epoch_axis, _located, _pm, _plt, _png, _table, learning_curves

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
