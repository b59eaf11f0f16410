"""Bias-variance sweeps (issue 26, Yang et al.): the per-point summary with paired jackknife SEs, the peak and the
interpolation threshold, the figure, the sweep file's checks, the committed sweep's configs, and `--part-seed`
pooling two partitions end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from kdforge.analysis.bias_variance import ce_decomposition, mse_decomposition, paired_jackknife_se
from kdforge.analysis.study import _jackknife
from kdforge.analysis.sweep import load_sweep, summarize_sweep, sweep_figure
from kdforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _variant(label: str, spread: float, train_error: float, seed: int) -> dict:
    """A fake study variant: 5 members whose logits scatter by `spread` around a shared mean."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 50, 3, generator=g, dtype=torch.float64)
    logp = (base + spread * torch.randn(5, 50, 3, generator=g, dtype=torch.float64)).log_softmax(-1)
    y = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(99))
    mse = mse_decomposition(logp.exp(), y)
    return {"label": label, **ce_decomposition(logp, y).means(), "mse_bias": float(mse.bias.mean()),
            "mse_variance": float(mse.variance.mean()), "top1": {"mean": 0.5, "std": 0.0},
            "members": [{"train_error": train_error}] * 5, **_jackknife(logp, y)}


def _reports() -> list:
    spreads, errors = [0.2, 1.5, 0.6], [0.2, 0.005, 0.0]
    return [(f"w{k}", float(2**k), {"variants": [_variant("ce", s, e, k), _variant("kd", s / 2, e, 10 + k)]})
            for k, (s, e) in enumerate(zip(spreads, errors))]


def test_summary_peak_threshold_and_paired_se() -> None:
    reports = _reports()
    s = summarize_sweep(reports, interpolation_error=0.01)
    ce = s["variants"]["ce"]
    assert ce["w_peak"] == 2.0 and ce["w_int"] == 2.0  # the widest spread is the middle point; 0.005 < 0.01
    v0, v1 = reports[0][2]["variants"][0], reports[1][2]["variants"][0]
    d = ce["peak_minus_first"]["variance"]
    assert d["diff"] == pytest.approx(v1["variance"] - v0["variance"]) and d["diff"] > 0
    assert d["se"] == pytest.approx(paired_jackknife_se(v0["leave_one_out"]["variance"],
                                                        v1["leave_one_out"]["variance"]))
    assert [a["to"] for a in ce["adjacent"]] == [2.0, 4.0]
    assert ce["points"][1]["se"]["bias"] == v1["jackknife_se"]["bias"] > 0
    kd = s["variants"]["kd"]
    assert "minus_reference" not in ce and len(kd["minus_reference"]) == 3
    assert kd["minus_reference"][1]["variance"]["diff"] < 0  # half the spread: less variance than ce


def test_summary_refuses_variants_without_leave_one_out() -> None:
    reports = _reports()
    del reports[1][2]["variants"][0]["leave_one_out"]
    with pytest.raises(ConfigError, match="under 3 members"):
        summarize_sweep(reports, 0.01)


def test_figure_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    s = summarize_sweep(_reports(), 0.01)
    s.update(title="t", x_label="width")
    (tmp_path / "sweep.json").write_text(json.dumps(s))
    png = sweep_figure(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(ConfigError, match="analyze sweep"):
        sweep_figure(tmp_path / "nothing")


def test_sweep_file_checks(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text(yaml.safe_dump({"title": "t", "config": "fashion_mnist_kd.yaml", "points": [
        {"label": "a", "x": 4}, {"label": "b", "x": 2}]}))
    with pytest.raises(ConfigError, match=r"s\.yaml.*increasing x"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "none.yaml")
    bad.write_text("points: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(bad)


def test_committed_sweeps_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdforge.analysis.study import parse_variants
    from kdforge.api import load_config
    from kdforge.plans.plan import config_path

    monkeypatch.chdir(REPO)
    # bias-variance sweeps have points; the KDVR driver beside them is checked in test_kdvr.py
    files = [f for f in sorted((REPO / "configs" / "sweeps").glob("*.yaml")) if "points" in yaml.safe_load(f.read_text())]
    assert files
    for path in files:
        sweep = load_sweep(path)
        assert sweep.key == path.stem
        for point in sweep.points:
            for tail in ([], sweep.sliver):
                cfg = load_config(config_path(path, sweep.config), [*sweep.overrides, *point.overrides, *tail])
                assert parse_variants(cfg, sweep.methods)


@pytest.mark.slow
def test_part_seeds_pool_two_partitions_and_log_member_fit(tmp_path: Path, monkeypatch) -> None:
    from kdforge.cli import main
    from kdforge.demo import preset

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(preset()))
    out = tmp_path / "bv"
    argv = ["analyze", "bias-variance", str(cfg), "train.epochs=1", "train.tensorboard=false", "--methods", "ce",
            "--parts", "3", "--part-seed", "1234", "--part-seed", "7", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert report["part_seeds"] == [1234, 7]
    members = report["variants"][0]["members"]
    assert [(m["part_seed"], m["part"]) for m in members] == [(1234, 0), (1234, 1), (1234, 2), (7, 0), (7, 1), (7, 2)]
    assert len({m["seed"] for m in members}) == 6
    assert (out / "ce" / "r0p0").is_dir() and (out / "ce" / "s7r0p2").is_dir()
    parts = [json.loads((Path(m["run_dir"]) / "data_splits.json").read_text())["ensemble"] for m in members]
    assert parts[3] == {"parts": 3, "bootstrap": False, "seed": 7, "part": 0}
    assert all(0.0 <= m["train_error"] <= 1.0 and m["train_ce"] > 0 for m in members)
    v = report["variants"][0]
    assert len(v["leave_one_out"]["variance"]) == 6 and v["jackknife_se"]["variance"] > 0
    assert main([*argv[:-4], "--part-seed", "7", "--part-seed", "7", "--out", str(out)]) == 2
