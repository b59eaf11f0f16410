"""A bias-variance sweep: one `bias_variance_study` per point of a grid (Yang et al., ICML 2020: bias, variance and
risk against the network's width), each in its own folder and resumable member by member, then one `sweep.json`
with every point's quantities, their paired leave-one-part-out jackknife SEs and the differences between points.

The sweep is a YAML file (configs/sweeps/*.yaml): the base experiment, overrides of every point, the methods, the
parts and partition seeds, and the points (label, x, overrides). `kdforge analyze sweep FILE --out DIR` runs it;
`kdforge analyze sweep-figure DIR` draws bias, variance and risk against x on a log axis with +-2 SE bars.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdforge.analysis.bias_variance import paired_jackknife_se
from kdforge.analysis.study import PART_SEED, bias_variance_study, parse_variants
from kdforge.errors import ConfigError, require_extra
from kdforge.fileio import atomic_write_text
from kdforge.options import load_yaml_model
from kdforge.plans.plan import config_path, slug

QUANTITIES = ("bias", "variance", "risk", "mse_bias", "mse_variance")


class SweepPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str = Field(min_length=1, description="the point's name and folder")
    x: float = Field(gt=0, description="its position on the (log) x axis, e.g. the number of channels")
    overrides: list[str] = Field(default_factory=list)


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str
    about: str = ""
    config: str = Field(description="experiment YAML: relative to configs/, the working folder or the sweep file")
    overrides: list[str] = Field(default_factory=list, description="overrides of every point")
    sliver: list[str] = Field(default_factory=list, description="overrides that make a quick check of every point")
    methods: str = Field("ce", description="as `analyze bias-variance --methods`; the first is the reference")
    parts: int = Field(5, ge=3, description="members per partition (>= 3 for the leave-one-out SE)")
    part_seeds: list[int] = Field(default_factory=lambda: [PART_SEED], min_length=1)
    x_label: str = "width"
    interpolation_error: float = Field(0.01, gt=0, lt=1, description="train error below which a point interpolates")
    points: list[SweepPoint] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> "Sweep":
        labels = [slug(p.label) for p in self.points]
        if len(set(labels)) != len(labels):
            raise ValueError("point labels must be distinct (after lower-casing and folding punctuation)")
        if sorted(p.x for p in self.points) != [p.x for p in self.points]:
            raise ValueError("points must be listed in increasing x")
        return self


def load_sweep(path: Path) -> Sweep:
    return load_yaml_model(path, Sweep, "sweep file", "sweeps live in configs/sweeps/<key>.yaml",
                           "title, config and points")


def run_sweep(path: Path, out: Path, sliver: bool = False, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every point's study (finished members reused), then `out/sweep.json`. Every point's config and methods are
    validated before anything trains; a sliver keeps its small teachers in `out/teachers`."""
    from kdforge.api import load_config

    sweep = load_sweep(path)
    tail = [*extra, *(sweep.sliver if sliver else []), *([f"teacher.store_dir={out / 'teachers'}"] if sliver else [])]
    cfgs = {}
    for point in sweep.points:
        try:
            cfg = load_config(config_path(path, sweep.config), [*sweep.overrides, *point.overrides, *tail])
        except ConfigError as e:
            raise ConfigError(f"sweep {path}, point {point.label!r}: {e}") from None
        cfgs[point.label] = (cfg, parse_variants(cfg, sweep.methods))
    reports = []
    for point in sweep.points:
        cfg, variants = cfgs[point.label]
        print(f"sweep {sweep.key}: point {point.label} (x = {point.x:g})", flush=True)
        report = bias_variance_study(cfg, variants, sweep.parts, out / slug(point.label), resume=True,
                                     part_seeds=sweep.part_seeds)
        reports.append((point.label, point.x, report))
    summary = summarize_sweep(reports, sweep.interpolation_error)
    summary.update(key=sweep.key, title=sweep.title, about=sweep.about, x_label=sweep.x_label, sliver=sliver)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=1))
    return summary


def _difference(a: dict[str, Any], b: dict[str, Any], key: str) -> dict[str, float]:
    """b - a for one quantity, with the paired jackknife SE (members pair by index: same part at both points)."""
    return {"diff": b[key] - a[key], "se": paired_jackknife_se(a["leave_one_out"][key], b["leave_one_out"][key])}


def summarize_sweep(reports: list[tuple[str, float, dict[str, Any]]], interpolation_error: float) -> dict[str, Any]:
    """Per variant: each point's quantities with jackknife SE and mean member train error; w_int (the smallest x
    whose mean train error is below `interpolation_error`), w_peak (argmax variance); the differences peak - first,
    peak - last and between adjacent points; and each variant minus the first variant at every point."""
    labels = [v["label"] for v in reports[0][2]["variants"]]
    variants: dict[str, Any] = {}
    for i, label in enumerate(labels):
        vs = [r["variants"][i] for _, _, r in reports]
        if any(v["label"] != label or "leave_one_out" not in v for v in vs):
            raise ConfigError(f"sweep: variant {label!r} is missing or has under 3 members at some point")
        points = [{"label": name, "x": x, **{q: v[q] for q in QUANTITIES if q in v},
                   "se": v["jackknife_se"], "top1": v["top1"],
                   "train_error": _mean([m.get("train_error") for m in v["members"]]),
                   "train_ce": _mean([m.get("train_ce") for m in v["members"]])}
                  for (name, x, _), v in zip(reports, vs)]
        peak = max(range(len(vs)), key=lambda k: vs[k]["variance"])
        inter = next((p["x"] for p in points if p["train_error"] is not None
                      and p["train_error"] < interpolation_error), None)
        variants[label] = {
            "points": points, "w_peak": points[peak]["x"], "w_int": inter,
            "peak_minus_first": {q: _difference(vs[0], vs[peak], q) for q in QUANTITIES},
            "peak_minus_last": {q: _difference(vs[-1], vs[peak], q) for q in QUANTITIES},
            "adjacent": [{"from": points[k]["x"], "to": points[k + 1]["x"],
                          **{q: _difference(vs[k], vs[k + 1], q) for q in QUANTITIES}} for k in range(len(vs) - 1)],
        }
        if i > 0:
            refs = [r["variants"][0] for _, _, r in reports]
            variants[label]["minus_reference"] = [{"x": x, **{q: _difference(ref, v, q) for q in QUANTITIES}}
                                                  for (_, x, _), ref, v in zip(reports, refs, vs)]
    return {"kind": "bias_variance_sweep", "reference": labels[0], "interpolation_error": interpolation_error,
            "variants": variants}


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def sweep_figure(out: Path, png: Path | None = None) -> Path:
    """Bias, variance and risk against x (log axis) with +-2 jackknife SE bars, one panel per variant, the members'
    mean train error on a second axis; dotted lines at w_int and w_peak."""
    path = out / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; run `kdforge analyze sweep FILE --out {out}` first")
    summary = json.loads(path.read_text())
    matplotlib = require_extra("matplotlib", "report", "a sweep's figure")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["variants"])
    # bias and risk share a panel; the variance (often 100x smaller) has its own, with the train error beside it
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 6.4), squeeze=False, sharex=True)
    for col, name in enumerate(names):
        v = summary["variants"][name]
        xs = [p["x"] for p in v["points"]]
        for ax, quantities in ((axes[0][col], (("bias", "C0"), ("risk", "k"))), (axes[1][col], (("variance", "C3"),))):
            for q, color in quantities:
                ax.errorbar(xs, [p[q] for p in v["points"]], yerr=[2 * p["se"][q] for p in v["points"]], fmt="o-",
                            color=color, capsize=3, label=f"CE {q} (+-2 jackknife SE)")
            for key, style in (("w_int", ":"), ("w_peak", "--")):
                if v[key] is not None:
                    ax.axvline(v[key], color="0.5", ls=style, lw=1, label=key)
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        twin = axes[1][col].twinx()
        twin.plot(xs, [p["train_error"] for p in v["points"]], "s:", color="C2", ms=4)
        twin.set_ylabel("mean member train error", color="C2")
        axes[0][col].set_title(f"{name}: w_peak {v['w_peak']:g}, w_int {v['w_int']}", fontsize=9)
        axes[1][col].set_xlabel(summary["x_label"])
    fig.suptitle(summary["title"] + ("  [sliver]" if summary.get("sliver") else ""), fontsize=10)
    fig.tight_layout()
    png = png or out / "sweep.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    plt.close(fig)
    return png
