"""SHA-256 of data files, so that a file is known to be the expected one before anything parses it."""
from __future__ import annotations

import hashlib
from pathlib import Path

from kdforge.errors import DataError
from kdforge.fileio import sha256_of


def verify_sha256(path: Path | str, expected: str) -> None:
    """Raise DataError unless the file at `path` hashes to `expected`."""
    _compare(path, sha256_of(path), expected)


def read_verified(path: Path, expected: str) -> bytes:
    """The bytes of `path`, checked against `expected`.

    Hashing the very bytes that will be parsed leaves no window for the file to change between check and use,
    which matters for formats that can run code (pickle).
    """
    data = path.read_bytes()
    _compare(path, hashlib.sha256(data).hexdigest(), expected)
    return data


def _compare(path: Path | str, actual: str, expected: str) -> None:
    if actual != expected.lower():
        raise DataError(
            f"{path}: sha256 mismatch (expected {expected.lower()}, got {actual}); the file is corrupt or "
            "a different version: copy it again from the data snapshot (`sha256sum -c SHA256SUMS` there checks it)"
        )
