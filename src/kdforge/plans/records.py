"""Per-seed records of a plan: what one (row, seed) run measured and where it came from.

`results/<key>.jsonl` holds one JSON line per (row, seed), sorted by the plan's row order then seed, with every
test/validation metric, the method's last logged statistics, fingerprints of the teacher, the student and the data,
and the commit, torch version and thread count. Nothing in it depends on the clock, so the same plan rerun on
the same commit and thread count rewrites it byte for byte; wall times go to `results/<key>.timing.jsonl`.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from kdforge import __version__
from kdforge.data import DataBundle
from kdforge.fileio import atomic_write_text

Record = dict[str, Any]


def tensor_digest(h: "hashlib._Hash", t: torch.Tensor | None) -> None:
    """Feed a tensor's dtype, shape and bytes (or a marker for None) into `h`."""
    if t is None:
        h.update(b"none;")
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype};{tuple(t.shape)};".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def data_fingerprint(bundle: DataBundle) -> str:
    """sha256 over every split's inputs and labels (and a graph's features and edges): two runs on the same
    fingerprint saw the same samples in the same splits."""
    h = hashlib.sha256(repr(bundle.spec).encode())
    for name in ("train", "val", "test", "unlabeled"):
        part = getattr(bundle, name)
        h.update(f"|{name}:".encode())
        if part is None:
            continue
        for t in (part.x, part.y, part.hidden_y):
            tensor_digest(h, t)
        if part.graph is not None:
            for t in (part.graph.x, part.graph.edge_index, part.graph.y):
                tensor_digest(h, t)
    return h.hexdigest()[:16]


def git_commit(cwd: Path | None = None) -> str:
    """HEAD of the repository the run happens in, '+dirty' when tracked files differ from it; 'unknown' outside
    git (an installed copy)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def environment(threads: int) -> dict[str, Any]:
    """What the numbers depend on besides the code: library versions and the thread count."""
    return {"kdforge": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": threads, "machine": platform.machine()}


def method_stats(run_dir: Path) -> dict[str, float]:
    """The last value of every scalar the method logged with `ctx.log` (the `method` events of metrics.jsonl)."""
    stats: dict[str, float] = {}
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return stats
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") != "method":
            continue
        stats.update({k: v for k, v in event.items() if k not in ("event", "step", "time", "epoch")
                      and isinstance(v, (int, float)) and not isinstance(v, bool)})
    return stats


def weights_sha(model_dir: Path) -> str | None:
    """The sha256 a saved model folder records for its weights (None when there is no saved model)."""
    meta = model_dir / "model.json"
    return json.loads(meta.read_text())["weights"]["sha256"][:16] if meta.exists() else None


def read_records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_records(path: Path, records: Iterable[Record], order: list[str]) -> None:
    """All records, sorted by row (in the plan's order; rows no longer in the plan last) then seed, one
    canonical JSON line each, written atomically."""
    rank = {label: i for i, label in enumerate(order)}
    ordered = sorted(records, key=lambda r: (rank.get(r["row"], len(rank)), r["row"], r["seed"]))
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))


def config_digest(cfg_json: str) -> str:
    return hashlib.sha256(cfg_json.encode()).hexdigest()[:16]
