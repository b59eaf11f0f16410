"""Run logging: one JSON line per event in metrics.jsonl, the same scalars in TensorBoard, a rich progress bar."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunLogger:
    """Appends to metrics.jsonl (so a resumed run continues the same file) and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir  # where a method may write an artifact of its own (main process only)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(run_dir / "metrics.jsonl", "a", buffering=1)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: it is slow to import

            self._tb = SummaryWriter(str(run_dir / "tb"))

    def log(self, event: str, step: int, **values: Any) -> None:
        self._jsonl.write(json.dumps({"event": event, "step": step, "time": time.time(), **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


PROGRESS_EVERY_ENV = "KDFORGE_PROGRESS_EVERY"  # seconds between plain progress lines (default 30)


class PlainProgress:
    """Progress as a plain line every `every` seconds (and at the end) when stderr is not a terminal: nohup and
    cluster logs get `kd seed 0: 1200/6000 steps (20%), loss 0.41 val 91.2%, 35 s, about 140 s left`, where the
    rich bar would print nothing until the run ends. The same calls as rich's Progress, for the trainer."""

    def __init__(self, every: float) -> None:
        self.every, self.tasks = every, {}  # type: ignore[var-annotated]

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks.values():
            if exc[0] is None and task["completed"] > task["shown"]:
                self._line(task)

    def add_task(self, description: str, total: float, completed: float = 0, status: str = "") -> int:
        now = time.monotonic()
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": completed,
                                       "status": status, "start": now, "from": completed, "last": now, "shown": 0}
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self.tasks[task_id]
        task["completed"] += advance
        if time.monotonic() - task["last"] >= self.every:
            self._line(task)

    def update(self, task_id: int, status: str = "") -> None:
        self.tasks[task_id]["status"] = status

    def _line(self, task: dict[str, Any]) -> None:
        now, done, total = time.monotonic(), task["completed"], task["total"]
        elapsed = now - task["start"]
        rate = (done - task["from"]) / elapsed if elapsed > 0 else 0.0
        left = f", about {(total - done) / rate:.0f} s left" if rate > 0 and total > done else ""
        status = f", {task['status']}" if task["status"] else ""
        print(f"{time.strftime('%H:%M:%S')} {task['description']}: {done:.0f}/{total:.0f} steps "
              f"({done / max(total, 1):.0%}){status}, {elapsed:.0f} s{left}", file=sys.stderr, flush=True)
        task["last"], task["shown"] = now, done


def _seconds(text: str) -> float:
    try:
        return max(0.0, float(text))
    except ValueError:  # a display setting: a bad value falls back to the default rather than stopping a run
        return 30.0


def make_progress(enabled: bool, console: Console | None = None) -> Progress | PlainProgress:
    """A rich progress bar on a terminal, plain lines every $KDFORGE_PROGRESS_EVERY seconds (30) otherwise."""
    console = console or Console(stderr=True)
    if enabled and not console.is_terminal:
        return PlainProgress(_seconds(os.environ.get(PROGRESS_EVERY_ENV, "30")))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
