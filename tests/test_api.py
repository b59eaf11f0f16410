"""The Python API: your own modules and data with no registration, and the compare/demo path."""
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import kdforge
from kdforge.api import as_split
from kdforge.compare import compare
from kdforge.config import parse_config
from kdforge.data import build
from kdforge.config.schema import DataConfig
from kdforge.demo import preset
from kdforge.errors import ConfigError
from kdforge.losses import kd_loss


@pytest.fixture(scope="module")
def digits():
    return build(DataConfig(name="digits"))


class Tiny(nn.Module):  # a user's own module: nothing registered
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)


def test_distill_own_modules_on_own_tensors(digits, tmp_path):
    torch.manual_seed(0)
    teacher = Tiny(128)
    kdforge.distill(teacher, None, (digits.train.x, digits.train.y), method="ce", epochs=30,
                    optim=kdforge.config.OptimConfig(name="adamw", lr=3e-3), run_dir=tmp_path / "t")
    student = Tiny(16)
    before = [p.clone() for p in student.parameters()]
    result = kdforge.distill(student, teacher, TensorDataset(digits.train.x, digits.train.y),
                             val=(digits.val.x, digits.val.y), test=digits.test, method="kd", epochs=30,
                             optim=kdforge.config.OptimConfig(name="adamw", lr=3e-3), run_dir=tmp_path / "s")
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))  # trained in place
    assert result.test["top1"] > 0.8 and result.test["agreement"] > 0.8
    assert (tmp_path / "s" / "metrics.jsonl").exists()


def test_as_split_rejects_other_things():
    with pytest.raises(ConfigError, match="Split, an \\(x, y\\) pair"):
        as_split([1, 2, 3])  # type: ignore[arg-type]
    split = as_split(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))
    assert split.x.shape == (3, 2) and split.y.dtype == torch.long


def test_losses_work_inside_a_plain_loop():
    s = torch.randn(4, 10, requires_grad=True)
    loss = nn.functional.cross_entropy(s, torch.arange(4)) + 0.9 * kd_loss(s, torch.randn(4, 10))
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_compare_writes_table_plot_and_reuses_teacher(tmp_path):
    cfg = parse_config(preset(), ["train.epochs=2", "teacher.recipe.train.epochs=2",
                                  f"teacher.store_dir={tmp_path / 'teachers'}"])
    result = compare(cfg, ["ce", "kd", "wsl"], seeds=2, out_dir=tmp_path / "cmp")
    assert [r["method"] for r in result.rows] == ["teacher (cnn)", "ce", "kd", "wsl"]
    for name in ("table.md", "table.csv", "results.json", "comparison.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    runs = json.loads((tmp_path / "cmp" / "results.json").read_text())["runs"]
    assert [s["seed"] for s in runs["kd"]] == [0, 1]
    assert runs["kd"][0]["test"] != runs["kd"][1]["test"]  # seeds differ
    assert len(list((tmp_path / "teachers").iterdir())) == 1  # trained once, reused by every run
