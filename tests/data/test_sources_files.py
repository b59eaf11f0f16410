"""idx and mnist1d parsing: real files where present, damaged copies in tmp_path for every failure mode."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kdforge.data.sources import idx, mnist1d
from kdforge.errors import DataError
from kdforge.registry import DATASETS


def _write_idx(path: Path, magic: bytes, sizes: tuple[int, ...], payload: bytes) -> Path:
    path.write_bytes(gzip.compress(magic + struct.pack(f">{len(sizes)}I", *sizes) + payload))
    return path


def test_read_idx_round_trip(tmp_path: Path) -> None:
    data = bytes(range(2 * 3 * 4))
    path = _write_idx(tmp_path / "ok.gz", bytes((0, 0, 8, 3)), (2, 3, 4), data)
    assert torch.equal(idx.read_idx(path, (2, None, 4)), torch.arange(24, dtype=torch.uint8).view(2, 3, 4))


@pytest.mark.parametrize(
    ("magic", "sizes", "payload", "match"),
    [
        (bytes((0, 0, 8, 3)), (5,), bytes(5), "magic"),  # an image header where labels are expected
        (bytes((0, 0, 9, 1)), (5,), bytes(5), "magic"),  # int8, not uint8
        (bytes((0, 0, 8, 1)), (4,), bytes(4), "sizes"),
        (bytes((0, 0, 8, 1)), (5,), bytes(3), "truncated"),
        (bytes((0, 0, 8, 1)), (5,), bytes(7), "truncated"),
    ],
)
def test_read_idx_rejects_bad_headers(
    tmp_path: Path, magic: bytes, sizes: tuple[int, ...], payload: bytes, match: str
) -> None:
    path = _write_idx(tmp_path / "labels.gz", magic, sizes, payload)
    with pytest.raises(DataError, match=match) as info:
        idx.read_idx(path, (5,))
    assert str(path) in str(info.value)


def test_read_idx_missing_and_not_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing data file .*absent.gz"):
        idx.read_idx(tmp_path / "absent.gz", (5,))
    (tmp_path / "plain.gz").write_bytes(b"\x00\x00\x08\x01 not gzip")
    with pytest.raises(DataError, match="plain.gz"):
        idx.read_idx(tmp_path / "plain.gz", (5,))


def test_real_fashion_mnist_shapes_and_balance(real_file: Callable[[str], Path]) -> None:
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels, _ = idx.FILES[split]
        x = idx.read_idx(real_file(f"fashion_mnist/{images}"), (None, None, None))
        y = idx.read_idx(real_file(f"fashion_mnist/{labels}"), (None,))
        assert x.shape == (n, 28, 28) and y.shape == (n,)
        assert torch.bincount(y.long()).tolist() == [n // 10] * 10


def test_damaged_fashion_mnist_copy_names_the_file(real_file: Callable[[str], Path], tmp_path: Path) -> None:
    """A truncated gzip inside an otherwise good folder: the loader fails on that file, naming it."""
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for images, labels, _ in idx.FILES.values():
        for name in (images, labels):
            os.symlink(real_file(f"fashion_mnist/{name}"), folder / name)
    bad = folder / idx.FILES["train"][1]
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        DATASETS["fashion_mnist"](tmp_path, {})
    assert str(bad) in str(info.value)


def test_real_mnist1d(real_file: Callable[[str], Path]) -> None:
    root = real_file(mnist1d.FILE).parent.parent
    spec, train, test = DATASETS["mnist1d"](root, {})
    assert spec.input_shape == (40,) and spec.num_classes == 10
    assert train.x.shape == (4000, 40) and test.x.shape == (1000, 40)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64


class _Payload:
    """Unpickling this creates a folder: proof of code execution if it ever happens."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.sentinel),)


def test_tampered_mnist1d_fails_on_hash_before_unpickling(tmp_path: Path) -> None:
    sentinel = tmp_path / "executed"
    path = tmp_path / mnist1d.FILE
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"x": _Payload(sentinel)}))
    with pytest.raises(DataError, match="sha256 mismatch") as info:
        DATASETS["mnist1d"](tmp_path, {})
    assert str(path) in str(info.value)
    assert not sentinel.exists()


def test_restricted_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    sentinel = tmp_path / "executed"
    with pytest.raises(DataError, match="not allowed"):
        mnist1d.load_arrays(pickle.dumps({"x": _Payload(sentinel)}), tmp_path / "evil.pkl")
    assert not sentinel.exists()


def test_restricted_unpickler_reads_arrays_and_checks_keys(tmp_path: Path) -> None:
    arrays = {"x": np.ones((3, 40)), "y": np.arange(3), "x_test": np.zeros((1, 40)), "y_test": np.arange(1)}
    loaded = mnist1d.load_arrays(pickle.dumps(arrays), tmp_path / "ok.pkl")
    assert np.array_equal(loaded["x"], arrays["x"])
    with pytest.raises(DataError, match="expected a dict with keys"):
        mnist1d.load_arrays(pickle.dumps({"x": np.ones(2)}), tmp_path / "short.pkl")


def test_mnist1d_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing data file"):
        DATASETS["mnist1d"](tmp_path, {})
