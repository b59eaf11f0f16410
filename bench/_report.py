"""Shared by the bench scripts: machine description and section-wise updates of docs/benchmarks.md."""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

from kdforge.fileio import atomic_write_text

HEADER = "# Benchmarks\n\nEvery section names the command that produced it; rerunning a script rewrites only its own section.\n"


def machine() -> str:
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, torch {torch.__version__}")


def today() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def command() -> str:
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def write_section(path: Path, key: str, body: str, tag: str = "bench") -> None:
    """Replace the text between `<!-- tag:key -->` and `<!-- /tag:key -->` (or append it) in `path`."""
    start, end = f"<!-- {tag}:{key} -->", f"<!-- /{tag}:{key} -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    atomic_write_text(path, text)
    print(f"wrote section {key!r} of {path}")


def reset_peak_rss() -> float:
    """This process's resident memory now (MiB), after resetting its high-water mark (writing 5 to clear_refs), so
    that `peak_rss()` reports the peak from here on. VmHWM, not ru_maxrss: the latter survives exec, so a child
    of a big parent would report the parent's peak."""
    rss = _proc_status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    return rss


def peak_rss() -> float:
    """Peak resident memory (MiB) since the last `reset_peak_rss()` (or since the process started)."""
    return _proc_status("VmHWM")


def _proc_status(field: str) -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) / 1024


def plain_kd_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """0.1 CE + 0.9 T^2 KL as a user writes it by hand in a plain loop: the baselines' loss, written once."""
    import torch.nn.functional as F

    kd = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean") * temperature * temperature
    return 0.1 * F.cross_entropy(s, y) + 0.9 * kd
