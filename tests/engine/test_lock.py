"""The run lock: a second run in the same folder is refused; a dead owner's lock is taken over."""
import json
import os
import socket
import subprocess
import sys

import pytest

from kdforge.engine.lock import LOCK, RunLock, process_state
from kdforge.errors import ConfigError


def test_second_holder_is_refused_naming_the_first(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "now"}))
        with pytest.raises(ConfigError, match=rf"in use by process {other.pid} on .*delete .*\.lock"):
            with RunLock(tmp_path):
                pass
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == other.pid  # the owner's lock is untouched
    finally:
        other.kill()
        other.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (tmp_path / LOCK).exists()


def test_one_holder_even_within_a_process_and_released(tmp_path):
    # The API is the lock's one owner (it takes it once around a run), so a second take, even by the same
    # process, is a second run in the folder: refused.
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match=rf"in use by process {os.getpid()}"):
            with RunLock(tmp_path):
                pass
        assert (tmp_path / LOCK).exists()
    assert not (tmp_path / LOCK).exists()


def test_unwritable_run_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write the run folder .*file/run.*output_dir"):
        with RunLock(tmp_path / "file" / "run"):
            pass


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="zombie detection reads /proc (Linux)")
def test_lock_of_a_zombie_is_taken_over(tmp_path):
    # A worker killed along with its launcher is re-parented to init; an init that never reaps (a container's)
    # leaves it a zombie, which os.kill(pid, 0) still reports as alive. Here we are the parent and do not reap.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while process_state(zombie.pid) != "Z":
            pass
        (tmp_path / LOCK).write_text(json.dumps({"pid": zombie.pid, "host": socket.gethostname(), "since": "then"}))
        with RunLock(tmp_path):
            assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    finally:
        zombie.wait()


def test_unreadable_lock_is_taken_over_not_probed_as_pid_minus_one(tmp_path):
    (tmp_path / LOCK).write_text("{")  # a writer that died between create and write
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
