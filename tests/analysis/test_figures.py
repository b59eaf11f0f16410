"""The figures' numbers: 95 % t-intervals from a table's mean, std and n; a single run gets no whisker; the
report's learning curves give each method its own loss panel plus one validation panel."""
from __future__ import annotations

import json
import math
from pathlib import Path

from kdforge.analysis import html
from kdforge.report import interval, plot_comparison


def test_interval_is_the_t_interval_of_the_mean() -> None:
    mean, half = interval({"seeds": 3, "top1": (0.5, 0.01)}, "top1", 100)
    assert mean == 50.0 and math.isclose(half, 4.303 * 1.0 / math.sqrt(3))
    assert interval({"seeds": 1, "top1": (0.9, 0.0)}, "top1", 100) == (90.0, 0.0)


def test_plot_comparison_with_a_single_run_row(tmp_path: Path) -> None:
    rows = [{"method": "teacher", "seeds": 1, "top1": (0.9, 0.0), "nll": (0.3, 0.0), "ece": (0.02, 0.0)},
            {"method": "kd", "seeds": 5, "top1": (0.8, 0.01), "nll": (0.5, 0.02), "ece": (0.03, 0.01)}]
    out = plot_comparison(rows, tmp_path / "c.png", "t")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_learning_curves_one_loss_panel_per_method(tmp_path: Path, monkeypatch) -> None:
    shapes = []
    real = html._plt

    def spy():
        plt = real()
        orig = plt.subplots

        def subplots(rows, cols, **kw):
            shapes.append((rows, cols))
            return orig(rows, cols, **kw)

        monkeypatch.setattr(plt, "subplots", subplots)
        return plt

    monkeypatch.setattr(html, "_plt", spy)
    groups = {}
    for name, scale in (("ce", 1.0), ("kd", 10.0)):
        dirs = []
        for seed in range(2):
            d = tmp_path / name / f"seed{seed}"
            d.mkdir(parents=True)
            recs = [{"event": "epoch", "epoch": e, "loss": scale / (e + 1 + seed)} for e in range(3)]
            recs[-1]["val_top1"] = 0.8
            (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
            dirs.append(d)
        groups[name] = dirs
    assert html.learning_curves(groups).startswith("<img")
    assert shapes == [(1, 3)]  # ce loss, kd loss, validation top-1
