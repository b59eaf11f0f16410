"""`kdforge analyze` / `kdforge report` on digits: ensembles trained through the engine, the decomposition's
identity on real members, resume without retraining, bad input as one line, and the HTML page."""
from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from kdforge.analysis.study import ensemble_parts, parse_variants
from kdforge.cli import main
from kdforge.api import parse_config
from kdforge.demo import preset
from kdforge.errors import ConfigError

TINY = ["train.epochs=2", "teacher.recipe.train.epochs=3", "train.tensorboard=false",
        "teacher.recipe.train.tensorboard=false"]


def test_parts_are_disjoint_equal_and_fixed() -> None:
    parts = ensemble_parts(103, 4, bootstrap=False)
    assert [len(p) for p in parts] == [25] * 4
    allidx = torch.cat(parts)
    assert len(allidx.unique()) == 100 and allidx.max() < 103
    assert all(torch.equal(a, b) for a, b in zip(parts, ensemble_parts(103, 4, bootstrap=False)))
    boot = ensemble_parts(50, 3, bootstrap=True)
    assert [len(p) for p in boot] == [50] * 3 and any(len(p.unique()) < 50 for p in boot)
    with pytest.raises(ConfigError, match="--parts"):
        ensemble_parts(10, 1, bootstrap=False)


def test_variants_take_params_and_reject_bad_ones() -> None:
    cfg = parse_config(preset(), [])
    vs = parse_variants(cfg, "ce, kd:temperature=1 ,wsl:alpha=1:temperature=3")
    assert [v.label for v in vs] == ["ce", "kd T=1", "wsl alpha=1 T=3"]
    assert vs[1].method.params == {**cfg.method.params, "temperature": 1}  # the config's own KD params, T changed
    assert vs[2].method.params == {"alpha": 1, "temperature": 3}
    with pytest.raises(ConfigError, match="temprature"):
        parse_variants(cfg, "kd:temprature=2")
    with pytest.raises(ConfigError, match="NAME:key=value"):
        parse_variants(cfg, "kd:4")
    with pytest.raises(ConfigError, match="unknown method"):
        parse_variants(cfg, "kdd")


def _config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(preset()))
    return path


@pytest.mark.slow
def test_bias_variance_end_to_end_resume_and_report(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the teacher store (runs/teachers) stays in the test's folder
    out = tmp_path / "bv"
    argv = ["analyze", "bias-variance", str(_config(tmp_path)), *TINY, "--methods", "ce,kd:temperature=2",
            "--parts", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "about" in capsys.readouterr().out  # the time estimate comes before the trainings
    report = json.loads((out / "analysis.json").read_text())
    assert [v["label"] for v in report["variants"]] == ["ce", "kd T=2"]
    for v in report["variants"]:
        assert v["bias"] + v["variance"] == pytest.approx(v["risk"], rel=1e-5) and v["variance"] > 0
        assert len(v["members"]) == 2 and len(v["per_sample"]["bias"]) == report["test_samples"]
    kd = report["variants"][1]
    assert len(kd["reg_fraction_per_epoch"]) == 2  # counted every epoch by the KD method
    assert report["variants"][0]["reg_fraction_per_epoch"] == []  # the student alone has no teacher to compare
    member = out / "kd_T=2" / "r0p1"
    splits = json.loads((member / "data_splits.json").read_text())
    assert splits["ensemble"] == {"parts": 2, "bootstrap": False, "seed": 1234, "part": 1}
    stamp = (member / "summary.json").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert "(0 to run)" in capsys.readouterr().out and (member / "summary.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "analysis.json").read_text())["variants"][1]["risk"] == pytest.approx(kd["risk"])
    # without --resume the finished runs are refused, not silently replaced
    assert main(argv) == 2 and "resume" in capsys.readouterr().err

    gv = tmp_path / "gv"
    assert main(["analyze", "grad-variance", str(_config(tmp_path)), *TINY, "--batches", "20", "--lambdas",
                 "0,0.5,1", "--student", str(member), "--out", str(gv)]) == 0
    curves = json.loads((gv / "analysis.json").read_text())["curves"]
    assert list(curves) == ["initialization", "trained alone (2 epochs)", "r0p1"]
    for c in curves.values():  # the measured minimum over the grid is never below the parabola's floor
        assert min(c["variance"]) >= c["floor"] * (1 - 1e-6) and c["variance"][0] > 0
    assert main(["analyze", "grad-variance", str(_config(tmp_path)), *TINY, "--student", str(tmp_path),
                 "--out", str(gv), "--resume"]) == 2
    assert "--student" in capsys.readouterr().err

    assert main(["analyze", "linear", "--batches", "50", "--out", str(tmp_path / "lin")]) == 0
    page = tmp_path / "report.html"
    assert main(["report", str(out), str(gv), str(tmp_path / "lin"), str(member), "--out", str(page)]) == 0
    text = page.read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 6 and all(len(i) > 1000 for i in images)
    assert "Bias and variance" in text and "Gradient variance" in text and "Run r0p1" in text
    assert not re.search(r'src="(?!data:)', text)  # self-contained: nothing fetched from elsewhere


def test_report_of_a_folder_without_results_is_one_line(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no analysis.json" in err[0]
    assert not (tmp_path / "r.html").exists()
