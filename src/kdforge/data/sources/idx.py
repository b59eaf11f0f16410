"""MNIST and Fashion-MNIST from their gzipped idx files (the format of the original distribution)."""
from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

from kdforge.data.sources.base import Loaded, SourceParams, finish, register, require
from kdforge.data.types import Split
from kdforge.errors import DataError

_UINT8 = 0x08
SIDE = 28
NUM_CLASSES = 10
# split -> (images file, labels file, sample count)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}


def read_idx(path: Path, shape: tuple[int | None, ...]) -> Tensor:
    """A gzipped idx file of uint8 as a tensor, after checking its magic number, sizes and length.

    `shape` gives the expected sizes (None = any); images and labels share this one parser, so a truncated or
    mislabelled file of either kind fails the same way, with a DataError naming the file.
    """
    raw = _gunzip(path)
    ndim = len(shape)
    header = 4 + 4 * ndim
    magic = bytes((0, 0, _UINT8, ndim))
    if raw[:4] != magic or len(raw) < header:
        raise DataError(
            f"{path}: not an idx file of uint8 with {ndim} dimension(s) (magic {raw[:4].hex()}, expected "
            f"{magic.hex()}); check that the file is the right one and copy it again from the data snapshot"
        )
    sizes = struct.unpack(f">{ndim}I", raw[4:header])
    if any(want is not None and got != want for got, want in zip(sizes, shape)):
        raise DataError(f"{path}: idx sizes {sizes}, expected {shape}; this is not the file the name promises")
    if len(raw) - header != math.prod(sizes):
        raise DataError(
            f"{path}: {len(raw) - header} data bytes for sizes {sizes} ({math.prod(sizes)} expected): the file "
            "is truncated or corrupt; copy it again from the data snapshot"
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(sizes)


def _gunzip(path: Path) -> bytes:
    try:
        with gzip.open(require(path), "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt, copy it again") from e


def _read_split(folder: Path, split: str) -> Split:
    images, labels, n = FILES[split]
    x = read_idx(folder / images, (n, SIDE, SIDE)).unsqueeze(1)
    y = read_idx(folder / labels, (n,)).long()
    if int(y.max()) >= NUM_CLASSES:
        raise DataError(f"{folder / labels}: label {int(y.max())} out of range 0-{NUM_CLASSES - 1}")
    return Split(x, y)


def _load(name: str, root: Path | None, params: SourceParams) -> Loaded:
    """1x28x28 grey images, 10 classes, 60,000 train / 10,000 test, read from <root>/<name>/."""
    assert root is not None, "idx sources need the data folder"
    folder = root / name
    return finish(name, _read_split(folder, "train"), _read_split(folder, "test"), num_classes=NUM_CLASSES)


for _name in ("mnist", "fashion_mnist"):
    register(_name)(functools.partial(_load, _name))
