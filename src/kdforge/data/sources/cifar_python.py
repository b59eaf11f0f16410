"""CIFAR-10 and CIFAR-100 in the official "python version" layout (https://www.cs.toronto.edu/~kriz/cifar.html).

cifar-10-python.tar.gz holds cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}; cifar-100-python.tar.gz
holds cifar-100-python/{train, test, meta}. Each member is a Python 2 pickle (protocol 2) of a dict: `data`, a uint8
array [N, 3072] (the 1024 red, then green, then blue values of a 32x32 image, row by row), and `labels` (CIFAR-10)
or `fine_labels` / `coarse_labels` (CIFAR-100), lists of ints; the meta file names the classes.

Looked for in the data folder and in its `cifar10/` (`cifar100/`) subfolder, as the extracted folder (first) or the
tarball. Before anything is unpickled, the tarball is checked against the md5 the download page publishes and an
extracted folder's files against the per-file md5s torchvision pins (pytorch/vision@5c2bb42
torchvision/datasets/cifar.py). A re-packed archive (another compression, a subset) is read with
`data.params.verify: false`, with a warning. Either way the pickles go through the restricted unpickler (numpy
arrays and plain Python values only), tar members are read into memory (never extracted), and the contents are
checked for structure: keys, dtype, shape, label range.
"""
from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from kdforge.data.safe_pickle import load_restricted
from kdforge.data.sources.base import Loaded, SourceParams, finish, register
from kdforge.data.types import Split
from kdforge.errors import DataError

log = logging.getLogger(__name__)

SIDE = 32
PIXELS = 3 * SIDE * SIDE
MAX_MEMBER_BYTES = 512 << 20  # the largest official member (CIFAR-100 `train`) is about 155 MB
PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class Layout:
    """One data set's files: the tarball and its md5, the folder inside it, and each member's md5."""

    name: str
    archive: str
    archive_md5: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    member_md5: dict[str, str]

    def candidates(self, root: Path) -> list[Path]:
        """Where the data may be, in the order tried: extracted folders before tarballs."""
        places = (root, root / self.name)
        return [place / self.folder for place in places] + [place / self.archive for place in places]


CIFAR10 = Layout(
    name="cifar10", archive="cifar-10-python.tar.gz", archive_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py", train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
    meta="batches.meta",
    member_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
)
CIFAR100 = Layout(
    name="cifar100", archive="cifar-100-python.tar.gz", archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python", train=("train",), test=("test",), meta="meta",
    member_md5={"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48"},
)
# label option -> (key of the labels in a batch, key of the class names in the meta file, number of classes)
LABELS = {
    "cifar10": ("labels", "label_names", 10),
    "fine": ("fine_labels", "fine_label_names", 100),
    "coarse": ("coarse_labels", "coarse_label_names", 20),
}


class CifarPythonParams(SourceParams):
    verify: bool = Field(True, description=(
        "check the files against the official md5s; false reads a re-packed archive (structural checks only, with "
        "a warning)"))


class Cifar100Params(CifarPythonParams):
    labels: Literal["fine", "coarse"] = Field("fine", description="the 100 fine classes or the 20 coarse superclasses")


@register("cifar100", params=Cifar100Params)
def load_cifar100(root: Path | None, params: Cifar100Params) -> Loaded:
    """3x32x32 RGB images, 100 fine (or 20 coarse) classes in the meta file's order, 50,000 train / 10,000 test."""
    assert root is not None, "cifar100 needs the data folder"
    return load(require_layout(root, CIFAR100), CIFAR100, params.labels, params.verify)


def locate(root: Path, layout: Layout) -> Path | None:
    """The first extracted folder or tarball of `layout` under `root`, or None."""
    return next((p for p in layout.candidates(root) if p.exists()), None)


def require_layout(root: Path, layout: Layout) -> Path:
    if (found := locate(root, layout)) is None:
        places = ", ".join(str(p) for p in layout.candidates(root))
        raise DataError(f"missing data file: none of {places} exists; put the official {layout.archive} ({PAGE}) "
                        "or its extracted folder there, or point $KDFORGE_DATA / data.root at its folder")
    return found


def load(path: Path, layout: Layout, labels: str, verify: bool) -> Loaded:
    """The splits of the folder or tarball at `path`, normalized (see `read_splits`)."""
    train, test, num_classes = read_splits(path, layout, labels, verify)
    return finish(layout.name, train, test, num_classes=num_classes)


def read_splits(path: Path, layout: Layout, labels: str, verify: bool) -> tuple[Split, Split, int]:
    """Train and test as uint8 [N, 3, 32, 32] images with int64 labels (batches in file order), and the class count.

    `labels` is "cifar10" for CIFAR-10, "fine" or "coarse" for CIFAR-100.
    """
    if not verify:
        log.warning("%s: not checked against the official md5s (data.params.verify=false); read with structural "
                    "checks only", path)
    members = _read_folder(path, layout, verify) if path.is_dir() else _read_tarball(path, layout, verify)
    label_key, names_key, num_classes = LABELS[labels]
    _class_names(members[layout.meta], names_key, num_classes)
    train, test = (_split([members[m] for m in part], label_key, num_classes) for part in (layout.train, layout.test))
    return train, test, num_classes


# A member after unpickling: its path (for messages) and its dict with str keys.
Member = tuple[Path, dict[str, Any]]


def _read_folder(folder: Path, layout: Layout, verify: bool) -> dict[str, Member]:
    out = {}
    for name in layout.member_md5:
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"missing data file {path} ({e.strerror}); the extracted {layout.folder}/ must hold "
                            f"{', '.join(layout.member_md5)}") from e
        if verify:
            _check_md5(path, data, layout.member_md5[name], f"the official {layout.folder}/{name}")
        out[name] = (path, _unpickle(data, path))
    return out


def _read_tarball(archive: Path, layout: Layout, verify: bool) -> dict[str, Member]:
    """The members of `layout` from the tarball, each read into memory; the md5 is taken of the bytes then parsed."""
    data = archive.read_bytes()
    if verify:
        _check_md5(archive, data, layout.archive_md5, f"the official {layout.archive}")
    wanted = {f"{layout.folder}/{name}": name for name in layout.member_md5}
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for info in tar:
                name = wanted.get(info.name.removeprefix("./"))
                if name is None or not info.isfile():
                    continue
                if info.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}: member {info.name} is {info.size} bytes, more than any CIFAR file")
                file = tar.extractfile(info)
                assert file is not None  # a regular file, checked above
                out[name] = (archive / info.name, _unpickle(file.read(), archive / info.name))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{archive}: not a readable tar archive ({e}); copy the official {layout.archive} again") from e
    if missing := [m for m in wanted if wanted[m] not in out]:
        raise DataError(f"{archive}: no member {missing[0]}; the archive must hold {layout.folder}/ with "
                        f"{', '.join(layout.member_md5)}")
    return out


def _check_md5(path: Path, data: bytes, expected: str, what: str) -> None:
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: md5 {actual} is not that of {what} ({expected}); copy the official file "
                        f"again ({PAGE}), or set data.params.verify=false to read a re-packed archive (checked for "
                        "structure only)")


def _unpickle(data: bytes, path: Path) -> dict[str, Any]:
    """A member's dict, read with numpy arrays as the only allowed globals; Python 2 `str`s decode as latin-1, as
    torchvision reads them. Byte-string keys (a file re-pickled from `encoding='bytes'`) become str."""
    obj = load_restricted(data, path, encoding="latin1")
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected a dict; is this a CIFAR python file?")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(member: Member, key: str) -> Any:
    path, obj = member
    if key not in obj:
        raise DataError(f"{path}: no key {key!r} (has {', '.join(map(str, obj))}); is this the right CIFAR file?")
    return obj[key]


def _class_names(meta: Member, key: str, num_classes: int) -> list[str]:
    names = _field(meta, key)
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise DataError(f"{meta[0]}: {key} should list {num_classes} class names")
    return names


def _split(batches: list[Member], label_key: str, num_classes: int) -> Split:
    """The batches' images and labels concatenated in file order, after checking each one's structure."""
    xs, ys = [], []
    for member in batches:
        path, x = member[0], _field(member, "data")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != PIXELS:
            found = f"{x.dtype} array {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise DataError(f"{path}: data is a {found}, expected a uint8 array [N, {PIXELS}]")
        y = _labels(path, _field(member, label_key), label_key, len(x), num_classes)
        xs.append(torch.from_numpy(np.array(x, copy=True)).view(-1, 3, SIDE, SIDE))  # a copy: the pickle's buffer
        ys.append(y)                                                               # may be read-only
    return Split(torch.cat(xs), torch.cat(ys))


def _labels(path: Path, raw: Any, key: str, n: int, num_classes: int) -> torch.Tensor:
    values = np.asarray(raw)
    if values.shape != (n,) or values.dtype.kind not in "iu":
        raise DataError(f"{path}: {key} should be {n} integers (one per image), found {values.dtype} {values.shape}")
    if n and (values.min() < 0 or values.max() >= num_classes):
        raise DataError(f"{path}: {key} has labels outside 0-{num_classes - 1}")
    return torch.from_numpy(values.astype(np.int64))
