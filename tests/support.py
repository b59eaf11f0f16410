"""Helpers shared by tests: stopping a run in process, and killing one with SIGKILL once it has checkpointed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The shared data folder beside the repository (X/main, X/shared/data), as `data.root` finds it in CI.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class Stop(Exception):
    """Raised by `stop_after` to interrupt a run in process, as a crash would."""


def stop_after(epoch_to_stop: int) -> Callable[[int, dict[str, Any]], None]:
    """An epoch callback that raises Stop after epoch `epoch_to_stop` (its checkpoint is written by then)."""
    def callback(epoch: int, record: dict[str, Any]) -> None:
        if epoch == epoch_to_stop:
            raise Stop
    return callback


def sigkill_after_checkpoint(proc: subprocess.Popen, run_dir: Path, epoch: int, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as `run_dir` holds a checkpoint of `epoch` or later; fail if it finished first."""
    latest = run_dir / "checkpoints" / "latest.json"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["epoch"] >= epoch:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below `root`: compare before and after to prove nothing changed."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def full_and_resumed(make: Callable[..., Any], tmp_path: Path, stop_epoch: int = 0) -> tuple[Any, Any, Any, Any]:
    """(full trainer, its result, resumed trainer, its result): `make(run_dir, callbacks=...)` builds the same
    trainer each time; one run goes through, another is stopped after `stop_epoch` and resumed from its folder."""
    full = make(str(tmp_path / "full"))
    full_result = full.fit()
    cut = make(str(tmp_path / "cut"), callbacks=(stop_after(stop_epoch),))
    try:
        cut.fit()
    except Stop:
        pass
    else:
        raise AssertionError("the run was not stopped")
    resumed = make(str(tmp_path / "cut"))
    return full, full_result, resumed, resumed.fit(resume=True)
