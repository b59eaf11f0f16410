"""The CLI end to end on real data: distill, evaluate the saved student, survive a SIGKILL and resume exactly."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kdforge
from support import SHARED, sigkill_after_checkpoint

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdforge", *args]


def _args(run_dir: Path, teachers: Path, train: int = 6000, epochs: int = 8, test: int = 1000,
          teacher_epochs: int = 2) -> list[str]:
    return [str(ROOT / "configs" / "fashion_mnist_kd.yaml"), f"data.train_subset={train}", f"data.test_subset={test}",
            f"train.epochs={epochs}", f"teacher.recipe.train.epochs={teacher_epochs}", f"teacher.store_dir={teachers}",
            f"output_dir={run_dir}", "train.progress=false", "teacher.recipe.train.progress=false"]


def _resume_args(run_dir: Path, teachers: Path) -> list[str]:
    """The kill-and-resume runs check plumbing (state saved and restored bit for bit), not learning: 600 images
    (5 batches an epoch), a teacher of one epoch and 5 epochs, killed after epoch 1, still leave three epochs
    (with the validation of epoch 5) to resume."""
    return _args(run_dir, teachers, train=600, epochs=5, test=200, teacher_epochs=1)


def test_distill_then_eval(tmp_path, teacher_store):
    # the session's teacher store: methods/test_fitnet.py trains the same teacher (same data, model and recipe)
    proc = subprocess.run(_cli("distill", *_args(tmp_path / "run", teacher_store), "train.epochs=2"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    student = kdforge.load_model(tmp_path / "run" / "student")  # no teacher, connectors or training state
    assert sum(p.numel() for p in student.parameters()) == summary["student"]["params"]
    ev = subprocess.run(_cli("eval", str(tmp_path / "run"), "--data", "fashion_mnist"), capture_output=True,
                        text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["top1"] > 0.5


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    teachers = tmp_path / "t"
    subprocess.run(_cli("train", "--teacher", *_resume_args(tmp_path / "x", teachers)), check=True, timeout=300)
    full = subprocess.run(_cli("distill", *_resume_args(tmp_path / "full", teachers)), capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 0, full.stderr

    cut_dir = tmp_path / "cut"
    proc = subprocess.Popen(_cli("distill", *_resume_args(cut_dir, teachers)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sigkill_after_checkpoint(proc, cut_dir, epoch=1)
    assert not (cut_dir / "summary.json").exists()

    resumed = subprocess.run(_cli("distill", *_resume_args(cut_dir, teachers), "--resume"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut_dir / "summary.json").read_text())["resumed_from_epoch"] >= 1
    a = load_file(str(tmp_path / "full" / "student" / "model.safetensors"))
    b = load_file(str(cut_dir / "student" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
