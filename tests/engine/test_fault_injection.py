"""Fault injection: SIGKILL at random moments (in a step, in a checkpoint write), resume, compare bit for bit;
a failing write (disk full) leaves the previous checkpoint intact and says so in one line."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdforge.engine import latest_checkpoint, load_checkpoint
from kdforge.engine.checkpoint import checkpoint_name, save_checkpoint

HERE = Path(__file__).parent
SCRIPT = [sys.executable, str(HERE / "alternating.py")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
EPOCHS, EVERY = "5", "2"  # a checkpoint every 2 steps: much of the run's time is spent writing them


def _final(run_dir: Path) -> dict:
    return torch.load(run_dir / "final.pt", weights_only=True)


@pytest.mark.slow
def test_ten_random_sigkills_each_resume_bit_identical(tmp_path):
    t0 = time.perf_counter()
    subprocess.run([*SCRIPT, str(tmp_path / "full"), EPOCHS, "--every", EVERY], check=True, env=ENV, timeout=300)
    duration = time.perf_counter() - t0
    reference = _final(tmp_path / "full")
    rng = random.Random(0)
    killed = 0
    for trial in range(10):
        run_dir = tmp_path / f"trial{trial}"
        proc = subprocess.Popen([*SCRIPT, str(run_dir), EPOCHS, "--every", EVERY], env=ENV)
        time.sleep(rng.uniform(0.3, duration))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        latest = latest_checkpoint(run_dir / "checkpoints")
        if latest is not None:
            load_checkpoint(latest)  # never a damaged checkpoint behind latest.json: checksums verify
        subprocess.run([*SCRIPT, str(run_dir), EPOCHS, "--every", EVERY, "--resume"], check=True, env=ENV,
                       timeout=300)
        resumed = _final(run_dir)
        assert all(torch.equal(reference[k], resumed[k]) for k in reference), f"trial {trial} differs"
    assert killed >= 5, "too few kills landed inside the run to mean anything"


def test_a_failing_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    module = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, checkpoint_name(0), module, {"epoch": 0})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("kdforge.engine.checkpoint.write_tensors", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, checkpoint_name(1), module, {"epoch": 1})
    assert latest_checkpoint(tmp_path).name == "epoch_0000" and load_checkpoint(tmp_path / "epoch_0000")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0000", "latest.json"]  # no half-written folder


def test_a_run_whose_disk_fills_stops_with_one_line_and_resumes(tmp_path, monkeypatch):
    sys.path.insert(0, str(HERE))
    from alternating import trainer

    from kdforge.errors import CheckpointError

    real = save_checkpoint
    calls = []

    def fills_up(ckpt_dir, name, module, state, keep=2):
        calls.append(name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(ckpt_dir, name, module, state, keep)

    monkeypatch.setattr("kdforge.engine.trainer.save_checkpoint", fills_up)
    with pytest.raises(CheckpointError, match=r"No space left on device\); the last good checkpoint .*epoch_0000 is "
                                              r"intact; free space"):
        trainer(str(tmp_path / "run"), epochs=3).fit()
    monkeypatch.setattr("kdforge.engine.trainer.save_checkpoint", real)
    assert trainer(str(tmp_path / "run"), epochs=3).fit(resume=True).resumed_from == 0
