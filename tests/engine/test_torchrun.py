"""`torchrun --nproc_per_node 2 -m kdforge distill CONFIG` on real gloo processes: one set of files, the loss
curve of one process at the same global batch, and an exact resume after the whole job is killed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from kdforge.api import build_data, build_teacher_cache, load_config, prepare_teacher, run
from kdforge.engine.lock import process_state

CONFIG = Path(__file__).parents[2] / "configs" / "digits_kd.yaml"
# Mixup and flips on, so that sharded augmentation is checked too; 12 epochs so a kill after epoch 2 still leaves
# nine to resume; a sliver of the training images (640: about 9 batches of 64 an epoch) since what is checked is the
# sharding, not learning.
EPOCHS = 12
COMMON = [f"train.epochs={EPOCHS}", "data.train_subset=640", "data.augment.flip=true", "data.augment.mixup_alpha=0.2",
          "train.tensorboard=false", "teacher.recipe.train.epochs=5"]

pytestmark = pytest.mark.slow


def _torchrun(overrides: list[str], common: list[str] = COMMON, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kdforge",
           "distill", str(CONFIG), *common, *overrides]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


def _epochs(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["event"] == "epoch"]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays one under an init that does not reap)."""
    return process_state(pid) not in (None, "Z", "X")


def test_two_processes_match_one_and_resume_exactly(tmp_path: Path) -> None:
    store = f"teacher.store_dir={tmp_path / 'teachers'}"
    cfg = load_config(CONFIG, [*COMMON, store, f"output_dir={tmp_path / 'one'}"])
    prepare_teacher(cfg, build_data(cfg.data))  # trained once here; both torchrun jobs load it
    run(cfg)

    whole = _torchrun([store, f"output_dir={tmp_path / 'two'}"])
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-3000:]
    assert out.count("kd seed 0: test top-1") == 1, out  # only the main process reports
    two = tmp_path / "two"
    last_two = [f"epoch_{EPOCHS - 2:04d}", f"epoch_{EPOCHS - 1:04d}"]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [*last_two, "latest.json"]
    assert len(json.loads((two / "summary.json").read_text())["test"]) > 0

    # Same global batch (64) and the same views: the only difference is the order of floating-point sums (a
    # gradient mean over 2 shards instead of one batch), about 1e-7 relative per step. Over 12 epochs of Adam
    # that stays far below 1e-4; a sharding or weighting bug (a shard seen twice, unequal shards weighted
    # equally, unsynchronised weights) moves the curve by 1e-2 or more.
    one_curve, two_curve = [r["loss"] for r in _epochs(tmp_path / "one")], [r["loss"] for r in _epochs(two)]
    assert len(one_curve) == len(two_curve) == EPOCHS
    assert max(abs(a - b) / a for a, b in zip(one_curve, two_curve)) < 1e-4

    cut = tmp_path / "cut"
    job = _torchrun([store, f"output_dir={cut}"])
    latest = cut / "checkpoints" / "latest.json"
    deadline = time.time() + 240
    workers: list[int] = []
    while job.poll() is None and time.time() < deadline:
        if latest.exists() and json.loads(latest.read_text())["epoch"] >= 2:
            workers = _children(job.pid)
            # torchrun starts each worker in a session of its own, so this kills the agent only, as an OOM killer
            # or `kill -9` of the launcher would: the workers must notice and stop, not train on as orphans that
            # hold the run folder's lock (the resume below would be refused) and write its checkpoints.
            os.killpg(job.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    assert len(workers) == 2
    deadline = time.time() + 10
    while any(map(_running, workers)) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, workers)), "the workers outlived their killed launcher"
    resumed = _torchrun([store, f"output_dir={cut}", "--resume"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert json.loads((cut / "summary.json").read_text())["resumed_from_epoch"] >= 2
    a, b = load_file(two / "student" / "model.safetensors"), load_file(cut / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    # Both processes read one teacher cache (fp32, built beforehand in one process at batch 64): the curve of the
    # live 2-process job, up to the teacher's logits on a 32-row shard vs a 64-row batch (last-bit matmul
    # differences, about 1e-8 relative).
    cache = [f"teacher.cache.path={tmp_path / 'cache'}", f"teacher.cache.epochs={EPOCHS}",
             "teacher.cache.dtype=float32"]
    build_teacher_cache(load_config(CONFIG, [*COMMON, store, *cache]))
    cached = _torchrun([store, f"output_dir={tmp_path / 'cached'}", "teacher.source=cache", *cache])
    out, err = cached.communicate(timeout=300)
    assert cached.returncode == 0, err[-3000:]
    cached_curve = [r["loss"] for r in _epochs(tmp_path / "cached")]
    assert len(cached_curve) == EPOCHS and max(abs(a - b) / a for a, b in zip(cached_curve, two_curve)) < 1e-6


# DFA with CNN students: BatchNorm in the student, the search copy and the connectors, a search stepping alpha on
# validation batches, two optimizers per stage. Batch 64 of 1,294 training samples leaves a last batch of 14 rows,
# split 7 / 7 (the unequal-shard case is in test_syncbn.py).
DFA = ["student.name=cnn", "student.params={channels: [8, 16], hidden: 32}", "method.name=dfa",
       "method.params={stages: [{student_layer: features.3, teacher_layers: [features.0, features.3]}, "
       "{student_layer: features.7, teacher_layers: [features.4, features.7]}], search_epochs: 2, arch_lr: 0.05}",
       "train.epochs=5", "train.tensorboard=false", "teacher.recipe.train.epochs=5", "data.augment.flip=true"]


def test_sync_batchnorm_makes_two_processes_train_a_batchnorm_student_as_one(tmp_path: Path) -> None:
    store = f"teacher.store_dir={tmp_path / 'teachers'}"
    cfg = load_config(CONFIG, [*DFA, store, f"output_dir={tmp_path / 'one'}"])
    prepare_teacher(cfg, build_data(cfg.data))
    run(cfg)
    curves = {}
    for sync in ("true", "false"):
        job = _torchrun([store, f"train.sync_batchnorm={sync}", f"output_dir={tmp_path / sync}"], common=DFA)
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-3000:]
        curves[sync] = [r["loss"] for r in _epochs(tmp_path / sync)]
    one = [r["loss"] for r in _epochs(tmp_path / "one")]
    gap = {k: max(abs(a - b) / a for a, b in zip(one, c)) for k, c in curves.items()}
    assert len(one) == len(curves["true"]) == 5
    assert gap["true"] < 1e-5, gap  # the order of floating-point sums only
    assert gap["false"] > 1e-4, gap  # each shard's own statistics: a different training, so the test can fail
