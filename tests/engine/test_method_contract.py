"""The method contract end to end: a method with two optimizers, alternating phases, a second split and extra
state is stopped mid-run (in process, and by a real SIGKILL) and resumed; it must end bit-identical."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdforge.engine import latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from alternating import trainer  # noqa: E402
from support import Stop, sigkill_after_checkpoint, stop_after  # noqa: E402

HERE = Path(__file__).parent


def _weights(t):
    return {k: v.clone() for k, v in t.method.trainable().state_dict().items()}


def test_two_optimizers_alternating_phases_resume_bit_identical(tmp_path):
    full = trainer(str(tmp_path / "full"))
    full_result = full.fit()
    cut = trainer(str(tmp_path / "cut"), callbacks=(stop_after(1),))
    with pytest.raises(Stop):
        cut.fit()
    state = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints")).state
    assert set(state["optimizers"]) == {"student", "weights"} and set(state["schedulers"]) == {"student", "weights"}
    assert state["method"]["epochs_started"] == 2 and set(state["method"]["phases"]) == {"s", "w"}
    resumed = trainer(str(tmp_path / "cut"))
    result = resumed.fit(resume=True)
    assert result.resumed_from == 1
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and {"class_logit", "seen"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.method.phases == full.method.phases and resumed.method.epochs_started == 4
    assert result.test == full_result.test
    # the second optimizer really ran on its own schedule
    assert not torch.equal(a["class_logit"], torch.zeros_like(a["class_logit"]))
    assert resumed.optimizers["weights"].lr < 0.05
    last = result.history[-1]
    assert "weight_loss" in last and last["loss"] == last["ce"]  # each mean is over the steps that reported it
    assert 0.1 < last["ce"] < 3 and 0.1 < last["weight_loss"] < 3


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_in_a_new_process(tmp_path):
    script = [sys.executable, str(HERE / "alternating.py")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([*script, str(tmp_path / "full"), "6"], check=True, timeout=300, env=env)
    proc = subprocess.Popen([*script, str(tmp_path / "cut"), "6", "--slow"], env=env)
    sigkill_after_checkpoint(proc, tmp_path / "cut", epoch=2)
    subprocess.run([*script, str(tmp_path / "cut"), "6", "--resume"], check=True, timeout=300, env=env)
    a = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_engine_imports_no_method_and_no_loss():
    code = ("import sys, kdforge.engine; bad = [m for m in sys.modules if m.startswith(('kdforge.methods', "
            "'kdforge.losses', 'kdforge.teachers', 'kdforge.api'))]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class StopAtStep:
    """Wraps a method's training_step to crash after global step `n` (mid-epoch), as a kill would."""

    def __init__(self, method, n):
        self.inner, self.n = method.training_step, n
        method.training_step = self

    def __call__(self, batch, ctx):
        if ctx.step == self.n:
            raise Stop
        return self.inner(batch, ctx)


def test_mid_epoch_checkpoint_resumes_bit_identical(tmp_path):
    full = trainer(str(tmp_path / "full"), checkpoint_steps=4)
    full_result = full.fit()
    cut = trainer(str(tmp_path / "cut"), checkpoint_steps=4)
    per_epoch = cut.plan.steps_per_epoch  # checkpoints every 4 global steps, inside epochs too
    crash = per_epoch + 10  # dies in epoch 1 after 10 of its batches
    StopAtStep(cut.method, crash)
    with pytest.raises(Stop):
        cut.fit()
    latest = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    state = load_checkpoint(latest).state
    saved = crash - crash % 4
    assert latest.name == f"epoch_0001_batch_{saved - per_epoch:06d}"
    assert state["step"] == saved and state["batch"] == saved - per_epoch > 0
    assert state["streams"]["val"][1] > 0  # the method's val stream position is in the checkpoint
    resumed = trainer(str(tmp_path / "cut"), checkpoint_steps=4)
    result = resumed.fit(resume=True)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.method.phases == full.method.phases and resumed.method.epochs_started == 4
    assert result.history[0] == full_result.history[1]  # the resumed epoch's record, running sums included
    assert result.test == full_result.test


def test_an_artifact_is_written_by_the_main_process_only(tmp_path):
    from kdforge.data import Batches, DataBundle, DataSpec, Split
    from kdforge.engine import Plan, Runtime, StepContext
    from kdforge.engine.settings import Recipe

    split = Split(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    batches = Batches(DataBundle(DataSpec("x", (2,), 2), split, None, None), 2)
    main = StepContext(Plan(Recipe(), 1, 2), batches, Runtime.from_env("cpu"), {}, run_dir=tmp_path)
    assert main.save_artifact("a.json", '{"x": 1}') == tmp_path / "a.json"
    assert main.save_artifact("b.bin", b"\x00\x01") == tmp_path / "b.bin"
    assert (tmp_path / "a.json").read_text() == '{"x": 1}' and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    nowhere = StepContext(Plan(Recipe(), 1, 2), batches, Runtime.from_env("cpu"), {})
    assert nowhere.save_artifact("c.json", "{}") is None
