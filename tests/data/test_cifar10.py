"""The CIFAR-10 JPEG source: decode, safetensors cache keyed by the archive, rebuild on damage."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdforge.data.sources import cifar10
from kdforge.errors import DataError
from kdforge.registry import DATASETS

# Class folder -> solid colour; listed out of order on purpose: classes are numbered by sorted name.
COLOURS = {"dog": (250, 10, 10), "ant": (10, 250, 10), "cat": (10, 10, 250)}


def _jpeg(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_zip(root: Path, per_class: dict[str, int], extra: dict[str, bytes] | None = None) -> Path:
    path = root / cifar10.ARCHIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for split, n in reversed(per_class.items()):  # written in reverse: the loader must sort members
            for cls, colour in COLOURS.items():
                for i in reversed(range(n)):
                    zf.writestr(f"cifar10/{split}/{cls}/{i:04d}.jpg", _jpeg(colour))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("KDFORGE_CACHE", str(folder))
    return folder


def _counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = cifar10.decode_archive

    def counted(archive: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
        calls.append(1)
        return real(archive)

    monkeypatch.setattr(cifar10, "decode_archive", counted)
    return calls


def test_tiny_archive_decodes_in_sorted_class_order(tmp_path: Path, cache: Path) -> None:
    _write_zip(tmp_path, {"train": 3, "test": 1})
    tensors, classes = cifar10.cached_tensors(tmp_path / cifar10.ARCHIVE)
    assert classes == ["ant", "cat", "dog"]
    assert tensors["x_train"].shape == (9, 3, 32, 32) and tensors["x_train"].dtype == torch.uint8
    assert tensors["y_train"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and tensors["y_test"].tolist() == [0, 1, 2]
    for x, y in zip(tensors["x_test"], tensors["y_test"]):  # each image carries its class colour (JPEG: roughly)
        colour = torch.tensor(COLOURS[classes[y]], dtype=torch.float32)
        assert (x.float().mean((1, 2)) - colour).abs().max() < 8
    spec, train, test = DATASETS["cifar10"](tmp_path, {})
    assert spec.input_shape == (3, 32, 32) and spec.num_classes == 3
    assert train.x.dtype == torch.float32 and len(train) == 9 and len(test) == 3


def test_cache_is_reused_keyed_and_rebuilt_when_damaged(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _write_zip(tmp_path, {"train": 2, "test": 1})
    calls = _counting_decoder(monkeypatch)
    first, _ = cifar10.cached_tensors(archive)
    (cache_file,) = cache.glob("cifar10-*.safetensors")
    assert calls == [1] and not list(cache.glob("*.tmp"))

    second, _ = cifar10.cached_tensors(archive)
    assert calls == [1] and all(torch.equal(first[k], second[k]) for k in first)

    damaged = bytearray(cache_file.read_bytes())
    damaged[-100] ^= 0xFF  # one pixel byte, past the header
    cache_file.write_bytes(bytes(damaged))
    rebuilt, _ = cifar10.cached_tensors(archive)
    assert calls == [1, 1] and torch.equal(rebuilt["x_train"], first["x_train"])

    cache_file.write_bytes(cache_file.read_bytes()[:1000])  # truncated
    cifar10.cached_tensors(archive)
    assert calls == [1, 1, 1]

    _write_zip(tmp_path, {"train": 1, "test": 1})  # a different archive gets its own cache file
    cifar10.cached_tensors(archive)
    assert calls == [1, 1, 1, 1] and len(list(cache.glob("cifar10-*.safetensors"))) == 2


def test_bad_archives_are_data_errors(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DataError, match="missing data file"):
        DATASETS["cifar10"](tmp_path, {})
    archive = _write_zip(tmp_path, {"train": 1, "test": 1}, {"cifar10/test/zebra/0000.jpg": _jpeg((0, 0, 0))})
    with pytest.raises(DataError, match="same classes"):
        cifar10.decode_archive(archive)
    archive = _write_zip(tmp_path, {"train": 1, "test": 1}, {"cifar10/train/ant/9999.jpg": b"not a jpeg"})
    with pytest.raises(DataError, match="9999.jpg is not a readable JPEG"):
        cifar10.decode_archive(archive)
    archive = _write_zip(tmp_path, {"train": 1, "test": 1}, {"cifar10/train/ant/9999.jpg": _jpeg((0, 0, 0), 16)})
    with pytest.raises(DataError, match="16x16, expected 32x32"):
        cifar10.decode_archive(archive)
    archive.write_bytes(b"PK not really")
    with pytest.raises(DataError, match="not a readable zip"):
        cifar10.decode_archive(archive)


@pytest.mark.slow
def test_real_cifar10_cache(real_file: Callable[[str], Path], cache: Path) -> None:
    tensors, classes = cifar10.cached_tensors(real_file(cifar10.ARCHIVE))
    assert classes == sorted(classes) and len(classes) == 10
    assert tensors["x_train"].shape == (50_000, 3, 32, 32) and tensors["x_test"].shape == (10_000, 3, 32, 32)
    assert torch.bincount(tensors["y_train"]).tolist() == [5000] * 10
    assert torch.bincount(tensors["y_test"]).tolist() == [1000] * 10
    again, _ = cifar10.cached_tensors(real_file(cifar10.ARCHIVE))
    assert torch.equal(again["x_test"], tensors["x_test"])
