"""Fixtures for the data tests: the real data folder when there is one (tests that need it skip otherwise)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kdforge.data import resolve_root
from kdforge.errors import DataError


@pytest.fixture(scope="session")
def data_root() -> Path:
    try:
        return resolve_root(None)
    except DataError as e:
        pytest.skip(f"no data folder: {e}")


@pytest.fixture
def real_file(data_root: Path) -> Callable[[str], Path]:
    """`real_file(relative)`: that file of the data folder, or skip the test when the folder lacks it."""

    def find(relative: str) -> Path:
        path = data_root / relative
        if not path.is_file():
            pytest.skip(f"{path} is absent")
        return path

    return find
