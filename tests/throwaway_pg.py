"""A throwaway PostgreSQL server in a temporary folder (initdb + pg_ctl, Unix socket only, trust auth), for
trying a multi-process search on a real database server: tests/search and bench/search_throughput.py use it
(`from throwaway_pg import local_postgres`, with tests/ on sys.path). A test helper, not part of the package.

    with local_postgres() as url:          # postgresql+psycopg2://postgres@/kdzero?host=/tmp/kdzpgXXXX&port=...
        search(config, workers=2, storage_url=url)
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PORT = 54329


def find_pg_bin() -> Path | None:
    """The folder of the newest `initdb` under /usr/lib/postgresql/*/bin, else on PATH; None when absent."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
                   if p.parts[-3].isdigit() else 0) if Path("/usr/lib/postgresql").is_dir() else []
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def unavailable() -> str | None:
    """Why no local server can be started here (None: it can)."""
    if find_pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql or on PATH"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root (the server refuses to) and there is no 'postgres' user to run it as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "the psycopg2 driver is not installed (pip install 'kdforge[postgres]')"
    return None


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def local_postgres(database: str = "kdzero", port: int = PORT) -> Iterator[str]:
    """Start a server, create `database`, yield its SQLAlchemy URL; stop the server and delete its folder after."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    bin_dir = find_pg_bin()
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="kdzpg"))  # short: a Unix socket path has a length limit
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data = root / "data"

    def call(*cmd: str) -> None:
        subprocess.run(_as_server_user([str(bin_dir / cmd[0]), *cmd[1:]]), check=True, capture_output=True)

    try:
        call("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
        call("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o",
             f"-k {root} -c listen_addresses='' -p {port}", "start")
        try:
            call("createdb", "-h", str(root), "-p", str(port), "-U", "postgres", database)
            yield f"postgresql+psycopg2://postgres@/{database}?host={root}&port={port}"
        finally:
            call("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
