"""The CIFAR-100 configs: one per CRD benchmark pair kdforge has the models of, each in RepDistiller's recipe, each
running end to end on a tiny fake cifar-100-python.tar.gz (read with the default md5 check, pinned to the fake)."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

import cifar_files as cf
from kdforge.api import load_config, run
from kdforge.data.sources import cifar_python
from kdforge.data.types import DataSpec
from kdforge.models import ModelSpec, build
from kdforge.models.convert import convert_checkpoint
from kdforge.registry import MODELS

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("cifar100_*.yaml"))
# HobbitLong/RepDistiller@b84f547 README.md, "Benchmark Results on CIFAR-100", in kdforge's model names.
SAME_ARCHITECTURE = {("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
                     ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8")}
CROSS_ARCHITECTURE = {("vgg13", "mobile_half"), ("resnet32x4", "shufflenetv1"), ("resnet32x4", "shufflenetv2"),
                      ("wrn_40_2", "shufflenetv1")}
NOT_IN_KDFORGE = {("ResNet50", "mobile_half"), ("ResNet50", "vgg8")}  # RepDistiller's resnetv2.ResNet50 is not ported
LIGHT_STUDENTS = {"mobile_half", "shufflenetv1", "shufflenetv2"}  # train_student.py: lr 0.01 for these


def test_every_benchmark_pair_with_kdforge_models_has_a_config() -> None:
    pairs = {(c.teacher.model.name, c.student.name) for c in map(load_config, CONFIGS)}
    assert pairs == SAME_ARCHITECTURE | CROSS_ARCHITECTURE and len(CONFIGS) == len(pairs)
    assert not {t.lower() for t, _ in NOT_IN_KDFORGE} & set(MODELS), "ResNet50 exists now: add its two pairs"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_repdistillers_recipe(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.data.name == "cifar100" and cfg.data.params == {}
    assert (cfg.data.val_fraction, cfg.data.batch_size) == (0, 64)
    assert (cfg.data.augment.crop_padding, cfg.data.augment.flip) == (4, True)
    assert (cfg.method.name, cfg.method.params) == ("kd", {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9})
    lr = 0.01 if cfg.student.name in LIGHT_STUDENTS else 0.05
    recipes = [(cfg.optim, cfg.schedule, cfg.train, lr)]
    assert cfg.teacher is not None and cfg.teacher.recipe is not None
    recipes.append((cfg.teacher.recipe.optim, cfg.teacher.recipe.schedule, cfg.teacher.recipe.train, 0.05))
    for optim, schedule, train, expected_lr in recipes:
        assert (optim.name, optim.lr, optim.momentum, optim.weight_decay) == ("sgd", expected_lr, 0.9, 5e-4)
        assert (schedule.name, schedule.milestones, schedule.gamma) == ("multistep", [150, 180, 210], 0.1)
        assert train.epochs == 240


def _sliver(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict:
    members = cf.cifar100_members(train=24, test=8)
    archive = cf.write_tarball(tmp_path / "data", cifar_python.CIFAR100, members)
    pinned = dataclasses.replace(cifar_python.CIFAR100, archive_md5=hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar_python, "CIFAR100", pinned)
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path / "cache"))
    overrides = [f"data.root={tmp_path / 'data'}", "train.epochs=1", "train.progress=false", "data.batch_size=16",
                 "teacher.recipe.train.epochs=1", "teacher.recipe.train.progress=false",
                 f"teacher.store_dir={tmp_path / 'teachers'}", f"output_dir={tmp_path / 'run'}"]
    summary = run(load_config(path, [*overrides, *extra]))
    assert 0.0 <= summary["test"]["top1"] <= 1.0
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()
    return summary


QUICK = "cifar100_kd_resnet56_resnet20"


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem == QUICK], ids=lambda p: p.stem)
def test_a_config_runs_on_a_fake_tarball(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sliver(path, tmp_path, monkeypatch)


def test_a_converted_repdistiller_teacher_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint saved as RepDistiller's train_teacher.py does, converted, then used as teacher.checkpoint: its
    spec must equal the cifar100 source's, or the run refuses the teacher."""
    teacher = build(ModelSpec(name="resnet56"), DataSpec("cifar100", (3, 32, 32), 100))
    ckpt = tmp_path / "save" / "models" / "resnet56_vanilla" / "ckpt_epoch_240.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"epoch": 240, "model": teacher.state_dict(), "accuracy": torch.tensor(72.34)}, ckpt)
    folder = convert_checkpoint(ckpt, tmp_path / "converted")
    path = next(p for p in CONFIGS if p.stem == QUICK)
    _sliver(path, tmp_path, monkeypatch, f"teacher.checkpoint={folder}")
    assert not (tmp_path / "teachers").exists()  # no teacher was trained


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem != QUICK], ids=lambda p: p.stem)
def test_every_config_runs_on_a_fake_tarball(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sliver(path, tmp_path, monkeypatch)
