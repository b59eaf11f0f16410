"""Small CIFAR files in exactly the official "python version" format, for tests.

The official members were written by Python 2's cPickle with protocol 2: Python 2 `str`s (dict keys, names, the
pixel buffer inside numpy's reduce tuple) are BINSTRING opcodes, and numpy's reconstructor is named
`numpy.core.multiarray._reconstruct`. Python 3's pickle would write `bytes` through `_codecs.encode` (a global the
official files never use, so the loader does not allow it); `Py2Pickler` writes them the Python 2 way instead.
"""
from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from kdforge.data.safe_pickle import NUMPY
from kdforge.data.sources import cifar_python

_RECONSTRUCT = NUMPY[("numpy.core.multiarray", "_reconstruct")]


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def py2_pickle(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def image(index: int) -> np.ndarray:
    """A distinct [3, 32, 32] uint8 image per index: value = (index * 7 + channel * 50 + row + 2 * column) % 256."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((index * 7 + c * 50 + h + 2 * w) % 256).astype(np.uint8)


def batch(first: int, n: int, labels: dict[bytes, list[int]]) -> bytes:
    """A batch member of images first..first+n-1 (rows of 3072 = red, green, blue planes) with its label lists."""
    data = np.stack([image(i).reshape(-1) for i in range(first, first + n)])
    content = {b"batch_label": b"testing batch", b"data": data, b"filenames": [b"img_%d.png" % i for i in range(n)]}
    return py2_pickle({**content, **labels})


def cifar10_members(per_batch: int = 2, test: int = 3) -> dict[str, bytes]:
    """data_batch_1..5 with `per_batch` images each, test_batch with `test`; image i has label i % 10."""
    members = {}
    for b in range(5):
        first = b * per_batch
        members[f"data_batch_{b + 1}"] = batch(first, per_batch, {b"labels": [i % 10 for i in range(first, first + per_batch)]})
    members["test_batch"] = batch(1000, test, {b"labels": [i % 10 for i in range(1000, 1000 + test)]})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    members["batches.meta"] = py2_pickle({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return members


def fine(i: int) -> int:
    return (i * 37) % 100


def coarse(i: int) -> int:
    return fine(i) // 5


def cifar100_members(train: int = 10, test: int = 4) -> dict[str, bytes]:
    """train / test / meta; image i has fine label fine(i) and coarse label coarse(i)."""
    def part(first: int, n: int) -> bytes:
        ids = range(first, first + n)
        return batch(first, n, {b"fine_labels": [fine(i) for i in ids], b"coarse_labels": [coarse(i) for i in ids]})

    meta = {b"fine_label_names": [b"fine%02d" % i for i in range(100)],
            b"coarse_label_names": [b"coarse%02d" % i for i in range(20)]}
    return {"train": part(0, train), "test": part(1000, test), "meta": py2_pickle(meta)}


def write_tarball(folder: Path, layout: cifar_python.Layout, members: dict[str, bytes]) -> Path:
    """`folder/<layout.archive>`: a gzipped tar with the members under `<layout.folder>/`, as the official one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / layout.archive
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{layout.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_folder(folder: Path, layout: cifar_python.Layout, members: dict[str, bytes]) -> Path:
    """The extracted `folder/<layout.folder>/`."""
    target = folder / layout.folder
    target.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (target / name).write_bytes(data)
    return target
