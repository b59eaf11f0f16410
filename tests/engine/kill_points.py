"""SIGKILLs at chosen moments of the alternating run (alternating.py), one per phase of a run, for
test_fault_injection.py. `python kill_points.py OUT EPOCHS EVERY` imports torch and kdforge once, then runs every
training in a child forked from this process (no state of a run lives in it: each child builds its trainer from
scratch, as a new process would), so a kill costs a fork, not an interpreter start:

- OUT/reference/final.pt: the run that never stops;
- for each kill point NAME: a child that SIGKILLs itself at that moment, OUT/NAME.killed (a copy of the run folder
  as the kill left it), then a child that resumes OUT/NAME and writes OUT/NAME/final.pt;
- OUT/outcomes.json: {NAME: [exit code of the killed child, exit code of the resumed one]} (-9: SIGKILL).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kdforge.engine.checkpoint as checkpoint
import kdforge.engine.trainer as trainer_module
from alternating import Alternating, trainer
from kdforge.engine import StepContext


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def on_call(owner: Any, name: str, n: int, after: bool = False,
            when: Callable[..., bool] = lambda *a, **k: True) -> None:
    """SIGKILL this process at the n-th call of `owner.name` among the calls for which `when(args)` holds: before it
    runs or, with `after`, once it has returned (its effects, in memory or on disk, are done)."""
    inner, seen = getattr(owner, name), 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        hit = when(*args, **kwargs) and (seen := seen + 1) == n
        if hit and not after:
            _kill()
        out = inner(*args, **kwargs)
        if hit:
            _kill()
        return out

    setattr(owner, name, wrapper)


def _epoch_end_write(path: Path, data: Any, **_: Any) -> bool:
    return "_batch_" not in path.parent.name  # the temporary folder of an end-of-epoch checkpoint


# Each point is a distinct moment of the run (what is on disk and what only in memory). With 2 epochs of 21 steps
# and a checkpoint every 3 steps: mid-epoch checkpoints after steps 3, 6, ..., 18 and 24, ..., 39, the ends of
# the epochs at steps 21 and 42; even steps train the student, odd ones the weighting on a val batch; only the
# last epoch validates (eval_every=5), then the test split is evaluated.
KILL_POINTS: dict[str, Callable[[], None]] = {
    "first_step_nothing_on_disk": lambda: on_call(Alternating, "training_step", 2),
    "mid_epoch_student_step": lambda: on_call(Alternating, "training_step", 30),
    "after_an_optimizer_step": lambda: on_call(StepContext, "optimize", 11, after=True),
    "after_drawing_from_the_val_stream": lambda: on_call(StepContext, "next_batch", 7, after=True),
    # the weights file of the second checkpoint written, its state file not yet
    "checkpoint_half_written": lambda: on_call(checkpoint, "write_tensors", 2, after=True),
    "checkpoint_complete_under_temporary_name": lambda: on_call(checkpoint, "_fsync_dir_files", 4, after=True),
    "checkpoint_renamed_before_latest_json": lambda: on_call(checkpoint, "atomic_write_text", 5),
    "latest_json_written_before_pruning": lambda: on_call(checkpoint, "_prune", 6),
    "end_of_epoch_checkpoint_half_written": lambda: on_call(checkpoint, "write_tensors", 1, after=True,
                                                            when=_epoch_end_write),
    "in_validation": lambda: on_call(trainer_module, "evaluate", 1),
    "epoch_start_after_its_checkpoint": lambda: on_call(Alternating, "on_epoch_start", 2),
    "final_test_after_the_last_checkpoint": lambda: on_call(trainer_module.Trainer, "_evaluate", 1,
                                                            when=lambda self, split: split == "test"),
}


def run(run_dir: Path, epochs: int, every: int, resume: bool = False) -> None:
    t = trainer(str(run_dir), epochs, checkpoint_steps=every)
    t.fit(resume=resume)
    torch.save({k: v.clone() for k, v in t.method.trainable().state_dict().items()}, run_dir / "final.pt")


def in_child(work: Callable[[], None]) -> int:
    """Run `work` in a forked child; its exit code (-9 when SIGKILL ended it, 1 when it raised)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main(out: Path, epochs: int, every: int) -> None:
    trainer(str(out / "warm-up"), epochs)  # imports what a trainer imports (sklearn, torch._dynamo) once, here
    assert in_child(lambda: run(out / "reference", epochs, every)) == 0, "the reference run failed"
    outcomes = {}
    for name, arm in KILL_POINTS.items():
        run_dir = out / name
        killed = in_child(lambda: (arm(), run(run_dir, epochs, every)))
        if run_dir.exists():
            shutil.copytree(run_dir, out / f"{name}.killed")
        outcomes[name] = [killed, in_child(lambda: run(run_dir, epochs, every, resume=True))]
    (out / "outcomes.json").write_text(json.dumps(outcomes, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
