"""Where data files and derived caches live. Nothing is downloaded: files come from a local data folder."""
from __future__ import annotations

import os
from pathlib import Path

from kdforge.errors import DataError

DATA_ENV = "KDFORGE_DATA"
CACHE_ENV = "KDFORGE_CACHE"


def resolve_root(root: str | None) -> Path:
    """The data folder: `root` if given, else $KDFORGE_DATA, else the nearest `shared/data` beside an ancestor.

    The repository sits at X/main with the data at X/shared/data, so walking up from the working directory
    finds the data both here and in CI, which runs from a fresh clone that has shared/ beside it.
    """
    if root is not None:
        return _existing(Path(root).expanduser(), f"data.root={root!r}")
    if env := os.environ.get(DATA_ENV):
        return _existing(Path(env).expanduser(), f"${DATA_ENV}={env!r}")
    for ancestor in Path.cwd().resolve().parents:
        candidate = ancestor / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise DataError(
        f"no data folder found: no shared/data beside any folder above {Path.cwd()}; "
        f"set ${DATA_ENV} or data.root to the folder holding the data files"
    )


def cache_dir() -> Path:
    """Folder for derived caches (e.g. decoded images): $KDFORGE_CACHE, else ~/.cache/kdforge; writers create it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kdforge").expanduser()


def _existing(path: Path, origin: str) -> Path:
    if not path.is_dir():
        raise DataError(f"data folder {path} (from {origin}) does not exist; point it at the folder of data files")
    return path
