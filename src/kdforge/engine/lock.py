"""One run per folder: a lock file naming the owner (pid, host), taken over when its owner is gone.

Two processes writing the same run folder would interleave checkpoints and logs; the second one is refused with a
message naming the first. A lock left by a killed process on this host is taken over with a warning (its pid is
no longer alive). The API is its one owner: it takes it once around a whole run (`kdforge.api.run_lock`).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from kdforge.errors import ConfigError

LOCK = ".lock"


def process_state(pid: int) -> str | None:
    """The state letter of `pid` in /proc/PID/stat ('R', 'S', 'Z' for a zombie, ...); None when it cannot be read
    (no such process, or no /proc as on macOS)."""
    try:  # "pid (comm) state ...": comm may hold spaces or parentheses, so split after the last ')'
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether `pid` is a running process. A zombie counts as gone: a killed process whose parent died too is
    re-parented to init, and an init that does not reap (a container's) leaves it a zombie for good."""
    if pid <= 0:  # os.kill(-1, 0) would probe every process, os.kill(0, 0) our own group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return process_state(pid) not in ("Z", "X")  # None (unreadable, or just gone): trust os.kill


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK

    def __enter__(self) -> "RunLock":
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while not self._create(owner):
                self._refuse_or_take_over()
        except OSError as e:  # a parent that is a file, a read-only or full disk, no permission
            raise ConfigError(f"cannot write the run folder {self.path.parent} ({e.strerror or e}); choose another "
                              "output folder (output_dir) or fix its permissions") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.path.unlink(missing_ok=True)

    def _create(self, owner: dict[str, object]) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        return True

    def _refuse_or_take_over(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            owner, pid, host = {}, -1, socket.gethostname()  # unreadable: a writer died mid-write
        if host == socket.gethostname() and not _alive(pid):
            print(f"warning: taking over the stale lock {self.path} of process {pid}, which is gone",
                  file=sys.stderr)
            self.path.unlink(missing_ok=True)
            return
        raise ConfigError(f"{self.path.parent} is in use by process {pid} on {host} (since "
                          f"{owner.get('since', '?')}); wait for it to finish, use another output folder, or delete "
                          f"{self.path} if that process is gone")
