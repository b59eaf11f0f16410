"""API runs are full runs: distill() writes summary.json, config.yaml and student/ with the CLI's writer, so
`kdforge report` and `kdforge eval` read its folder; a failed call leaves nothing behind."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

import kdforge
from kdforge.api import build_model
from kdforge.cli import main
from kdforge.config.schema import ModelConfig
from kdforge.errors import ConfigError
from support import tree_digest


def _xy(split):
    return split.x, split.y


def test_distill_run_folder_is_read_by_report_and_eval(digits, tmp_path, capsys):
    student = build_model(ModelConfig(name="mlp", params={"hidden": [32]}), digits.spec, "student")
    run = tmp_path / "run"
    result = kdforge.distill(student, None, _xy(digits.train), test=_xy(digits.test), method="ce", epochs=2,
                             run_dir=run, tensorboard=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "ce" and summary["student"]["model"] == "mlp"
    assert summary["test"]["top1"] == result.test["top1"] and summary["epochs"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["distill"]["train"]["epochs"] == 2
    capsys.readouterr()
    assert main(["eval", str(run), "--data", "digits"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(result.test["top1"])
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "Run run" in (tmp_path / "r.html").read_text()


class Own(nn.Module):  # the caller's own class: no builder can rebuild it
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_own_module_run_keeps_weights_and_eval_says_why_it_cannot_load(digits, tmp_path, capsys):
    student, run = Own(), tmp_path / "own"
    kdforge.distill(student, None, _xy(digits.train), method="ce", epochs=1, run_dir=run, tensorboard=False)
    from safetensors.torch import load_file

    assert torch.equal(load_file(run / "student" / "model.safetensors")["fc.weight"], student.fc.weight)
    assert json.loads((run / "summary.json").read_text())["student"]["model"] == "Own"
    assert main(["eval", str(run), "--data", "digits"]) == 2
    assert "only the weights of your own module" in capsys.readouterr().err


class Broken(Own):
    """Fails in its first training step (the set-up probe runs it in eval mode and passes)."""

    def forward(self, x):
        if self.training:
            raise RuntimeError("boom in the first step")
        return super().forward(x)


@pytest.mark.parametrize("case", ["batch_size", "method", "fails-in-training"])
def test_failed_call_leaves_no_folder(digits, tmp_path, case):
    run = tmp_path / "new" / "run"
    if case != "fails-in-training":
        bad = {"batch_size": {"batch_size": 0}, "method": {"method": "nope"}}[case]
        with pytest.raises(ConfigError, match=case):
            kdforge.distill(Own(), None, _xy(digits.train), **{"method": "ce", "epochs": 1, **bad}, run_dir=run)
    else:
        with pytest.raises(RuntimeError, match="boom"):
            kdforge.distill(Broken(), None, _xy(digits.train), method="ce", epochs=1, run_dir=run,
                            tensorboard=False)
    assert not (tmp_path / "new").exists()


def test_failed_call_leaves_an_existing_folder_untouched(digits, tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    before = tree_digest(run)
    with pytest.raises(RuntimeError, match="boom"):
        kdforge.distill(Broken(), None, _xy(digits.train), method="ce", epochs=1, run_dir=run, tensorboard=False)
    assert tree_digest(run) == before


@pytest.mark.parametrize("bad, match", [({"precision": "fp8"}, "precision='fp8'"), ({"accumulate": 0}, "accumulate=0")])
def test_precision_and_accumulate_arguments_are_checked_in_one_line(digits, tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match) as info:
        kdforge.distill(Own(), None, _xy(digits.train), method="ce", epochs=1, run_dir=tmp_path / "r", **bad)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "r").exists()


def test_accumulate_through_distill_matches_the_larger_batch(digits, tmp_path):
    """Two micro-batches of 32 per step train the same weights as batches of 64 (CE on an MLP: per-sample loss)."""
    weights = []
    for batch_size, accumulate in ((64, 1), (32, 2)):
        torch.manual_seed(0)
        model = Own()
        kdforge.distill(model, None, _xy(digits.train), method="ce", epochs=1, batch_size=batch_size,
                        accumulate=accumulate, run_dir=tmp_path / f"b{batch_size}", tensorboard=False)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)
