from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kdforge.data import resolve_root
from kdforge.data.checksums import read_verified, verify_sha256
from kdforge.fileio import sha256_of
from kdforge.errors import DataError


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    payload = bytes(range(256)) * 9000  # spans several read chunks
    path.write_bytes(payload)
    assert sha256_of(path) == hashlib.sha256(payload).hexdigest()


def test_verify_sha256_names_file_and_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    actual = hashlib.sha256(b"abc").hexdigest()
    verify_sha256(path, actual.upper())
    assert read_verified(path, actual) == b"abc"
    with pytest.raises(DataError) as info:
        verify_sha256(path, "0" * 64)
    message = str(info.value)
    assert str(path) in message and "0" * 64 in message and actual in message and "copy it again" in message


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KDFORGE_DATA", raising=False)


def test_explicit_root_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("KDFORGE_DATA", str(tmp_path / "b"))
    assert resolve_root(str(tmp_path / "a")) == tmp_path / "a"
    assert resolve_root(None) == tmp_path / "b"


def test_missing_explicit_or_env_root_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="data.root"):
        resolve_root(str(tmp_path / "nope"))
    monkeypatch.setenv("KDFORGE_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="KDFORGE_DATA"):
        resolve_root(None)


@pytest.mark.usefixtures("no_env")
def test_walks_up_to_a_sibling_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work = tmp_path / "main" / "tests"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert resolve_root(None) == (tmp_path / "shared" / "data").resolve()


@pytest.mark.usefixtures("no_env")
def test_no_data_folder_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if any((p / "shared" / "data").is_dir() for p in tmp_path.resolve().parents):
        pytest.skip("a shared/data folder exists above the temporary directory")
    with pytest.raises(DataError, match="KDFORGE_DATA or data.root"):
        resolve_root(None)
