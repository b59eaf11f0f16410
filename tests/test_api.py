"""The Python API: your own modules and data with no registration, and the compare/demo path."""
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import kdforge
from kdforge.api import as_split, parse_config
from kdforge.compare import compare
from kdforge.demo import preset
from kdforge.errors import CheckpointError, ConfigError
from kdforge.losses import kd_loss


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


def _xy(split, n=300):
    return split.x[:n], split.y[:n]


def test_distill_leaves_the_callers_teacher_as_found(digits, tmp_path):
    teacher = Tiny(32).train()  # a user's teacher in train mode, with gradients on
    kdforge.distill(Tiny(16), teacher, _xy(digits.train), epochs=1, run_dir=tmp_path / "r", tensorboard=False)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert not teacher._forward_hooks and not any(m._forward_hooks for m in teacher.modules())
    teacher.eval()
    kdforge.distill(Tiny(16), teacher, _xy(digits.train), epochs=1, run_dir=tmp_path / "r2", tensorboard=False)
    assert not teacher.training


def test_no_test_split_means_empty_test_metrics_that_say_so(digits, tmp_path):
    result = kdforge.distill(Tiny(16), Tiny(32), _xy(digits.train), val=_xy(digits.val), epochs=1,
                             run_dir=tmp_path / "r", tensorboard=False)
    assert len(result.test) == 0 and "no test split" in result.test.note and "no test split" in repr(result.test)
    with pytest.raises(KeyError, match="no test split was given"):
        result.test["top1"]
    assert result.val["top1"] > 0  # the val metrics are the val split's, not the train split's
    none = kdforge.distill(Tiny(16), None, _xy(digits.train), method="ce", epochs=1, run_dir=tmp_path / "n",
                           tensorboard=False)
    assert len(none.val) == 0 and len(none.test) == 0 and none.history[0]["train_top1"] > 0


def test_default_run_folder_is_new_each_call_and_an_existing_one_is_refused(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        kdforge.distill(Tiny(16), None, _xy(digits.train), method="ce", epochs=1, tensorboard=False)
    assert len(list((tmp_path / "runs" / "api").iterdir())) == 2
    kdforge.distill(Tiny(16), None, _xy(digits.train), method="ce", epochs=1, run_dir="mine", tensorboard=False)
    with pytest.raises(ConfigError, match="already holds checkpoints.*overwrite=True"):
        kdforge.distill(Tiny(16), None, _xy(digits.train), method="ce", epochs=1, run_dir="mine")
    kdforge.distill(Tiny(16), None, _xy(digits.train), method="ce", epochs=1, run_dir="mine", overwrite=True,
                    tensorboard=False)


def test_distill_options_reach_the_run(digits, tmp_path):
    result = kdforge.distill(
        Tiny(16), Tiny(32), _xy(digits.train), val=_xy(digits.val), test=_xy(digits.test), method="kd", epochs=4,
        eval_every=2, checkpoint_every=2, grad_clip=1.0, label_smoothing=0.1, device="cpu", tensorboard=False,
        teacher_metrics=False, optim=kdforge.OptimConfig(name="adamw", lr=1e-3),
        schedule=kdforge.ScheduleConfig(name="cosine"), run_dir=tmp_path / "r")
    assert [("val_top1" in h) for h in result.history] == [False, True, False, True]
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").glob("epoch_*")) == ["epoch_0001", "epoch_0003"]
    assert not (tmp_path / "r" / "tb").exists() and "agreement" not in result.test
    with pytest.raises(CheckpointError, match=r"does not fit this run \(optimizers \{'main': 'AdamW'\}"):
        kdforge.distill(Tiny(16), Tiny(32), _xy(digits.train), method="kd", epochs=6, resume=True,
                        tensorboard=False, run_dir=tmp_path / "r")  # default optimizer is SGD: refused
    resumed = kdforge.distill(Tiny(16), Tiny(32), _xy(digits.train), method="kd", epochs=6, resume=True,
                              optim=kdforge.OptimConfig(name="adamw", lr=1e-3), tensorboard=False,
                              run_dir=tmp_path / "r")
    assert resumed.resumed_from == 3 and len(resumed.history) == 2


def test_teacher_store_key_ignores_settings_that_do_not_change_weights():
    from kdforge.api import teacher_dir

    base = parse_config(preset())
    same = parse_config(preset(), ["teacher.recipe.train.progress=true", "teacher.recipe.train.eval_every=3",
                                   "teacher.recipe.train.tensorboard=false", "data.eval_batch_size=17"])
    other = parse_config(preset(), ["teacher.recipe.train.epochs=31"])
    assert teacher_dir(base) == teacher_dir(same) != teacher_dir(other)
