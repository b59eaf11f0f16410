"""Errors a user can act on. The CLI prints `error: <message>` and exits 2 for these; anything else is a bug."""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType


class KdforgeError(Exception):
    """Base of every error caused by input (config, data, checkpoint, cache), not by a bug."""


class ConfigError(KdforgeError):
    """A config key, type or name is wrong; the message names the key path and the allowed values."""


class DataError(KdforgeError):
    """A data file is missing, truncated or does not match its checksum; the message names the file."""


class CheckpointError(KdforgeError):
    """A checkpoint or saved model is missing, truncated or corrupt; the message names the file."""


class CacheError(KdforgeError):
    """A teacher cache is missing, damaged, or was built for other data, teacher or settings; the message names
    the folder or shard and how to rebuild it."""


class TrainingDiverged(KdforgeError):
    """A loss became NaN/inf; the message names the step and the last good checkpoint."""


class MissingExtra(KdforgeError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it (an ImportError too,
    so `pytest.importorskip` and `except ImportError` keep working)."""


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """`module` imported, or a MissingExtra in one line: `<what> needs the [<extra>] extra: pip install
    'kdforge[<extra>]'`. Every optional import of kdforge goes through here (extras in pyproject.toml)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = getattr(e, "name", None)
        cause = "" if missing and module.split(".")[0] == missing.split(".")[0] else f" ({e})"
        raise MissingExtra(f"{what} needs the [{extra}] extra: pip install 'kdforge[{extra}]'{cause}") from None


@contextmanager
def at_key(key_path: str) -> Iterator[None]:
    """Prefix ConfigErrors (and ValueErrors, which become ConfigErrors) raised inside with the config key whose
    value caused them, e.g. `method.params.student_layer: no module 'layr2' ...`."""
    try:
        yield
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"{key_path}: {e}") from None
