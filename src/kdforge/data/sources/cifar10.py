"""CIFAR-10, from the official python archive (`cifar_python`) or a zip of JPEGs decoded once and cached.

`data.params.format` picks the file: `python` (cifar-10-python.tar.gz or its extracted cifar-10-batches-py/, the
lossless original), `jpeg` (cifar10_jpg/cifar10-jpg-q75.zip, the lossy copy in the data snapshot), or `auto` (the
default): whichever of the two the data folder holds; when it holds both, `format` must say which, since they
differ in every pixel and a teacher trained on one is not the teacher of the other.

The JPEG zip: decoding its 60,000 JPEGs takes seconds to a minute; reading the cache takes a fraction of a second. It is
keyed by the archive's SHA-256 (a changed archive never reuses a stale cache), written atomically (a crash
never leaves a half-written file under the final name), and checked on every load against a digest of its
own contents (a damaged cache is rebuilt, not trusted).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from rich.progress import track
from pydantic import Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from kdforge.fileio import atomic_write, sha256_of
from kdforge.data.root import cache_dir
from kdforge.data.sources import cifar_python
from kdforge.data.sources.base import Loaded, finish, register, require
from kdforge.data.types import Split
from kdforge.errors import DataError

log = logging.getLogger(__name__)

ARCHIVE = "cifar10_jpg/cifar10-jpg-q75.zip"
SIDE = 32
SPLITS = ("train", "test")
CACHE_FORMAT = "kdforge-cifar10-uint8-v1"
_MEMBER = re.compile(r"cifar10/(train|test)/([^/]+)/[^/]+\.jpg")


class _StaleCache(Exception):
    """The cache file cannot be used; the message says why, and the data is decoded again."""


class Cifar10Params(cifar_python.CifarPythonParams):
    format: Literal["auto", "python", "jpeg"] = Field("auto", description=(
        "python: the official archive; jpeg: the JPEG zip; auto: whichever the data folder holds"))


@register("cifar10", params=Cifar10Params)
def load(root: Path | None, params: Cifar10Params) -> Loaded:
    """3x32x32 RGB images, 10 classes, 50,000 train / 10,000 test (python: the meta file's class order, which is
    also the sorted order of the JPEG zip's class folders)."""
    assert root is not None, "cifar10 needs the data folder"
    if _format(root, params.format) == "python":
        layout = cifar_python.CIFAR10
        return cifar_python.load(cifar_python.require_layout(root, layout), layout, "cifar10", params.verify)
    tensors, classes = cached_tensors(require(root / ARCHIVE))
    train, test = (Split(tensors[f"x_{s}"], tensors[f"y_{s}"]) for s in SPLITS)
    return finish("cifar10", train, test, num_classes=len(classes))


def _format(root: Path, asked: str) -> str:
    """`asked`, or for `auto` the one format present; both present or neither is a DataError saying what to do."""
    if asked != "auto":
        return asked
    python, jpeg = cifar_python.locate(root, cifar_python.CIFAR10), root / ARCHIVE
    if python is not None and jpeg.is_file():
        raise DataError(f"cifar10: the data folder holds both {python} and {jpeg}; set data.params.format to python "
                        "(the original) or jpeg (the lossy copy)")
    if python is None and not jpeg.is_file():
        places = ", ".join(str(p) for p in cifar_python.CIFAR10.candidates(root))
        raise DataError(f"missing data file: neither {jpeg} nor any of {places} exists; put the official "
                        f"cifar-10-python.tar.gz ({cifar_python.PAGE}) there, or point $KDFORGE_DATA / data.root "
                        "at the folder that holds the data files")
    return "python" if python is not None else "jpeg"


def cached_tensors(archive: Path) -> tuple[dict[str, Tensor], list[str]]:
    """The decoded archive as {x_train, y_train, x_test, y_test} and the class names, from cache when valid."""
    key = sha256_of(archive)
    path = cache_dir() / f"cifar10-{key[:32]}.safetensors"
    if path.exists():
        try:
            return _read_cache(path, key)
        except _StaleCache as e:
            log.warning("rebuilding the CIFAR-10 cache %s: %s", path, e)
    tensors, classes = decode_archive(archive)
    try:
        _write_cache(path, tensors, classes, key)
    except OSError as e:  # a read-only cache folder costs time on every load, but is no reason to fail
        log.warning("cannot write the CIFAR-10 cache %s (%s); set $KDFORGE_CACHE to a writable folder", path, e)
    return tensors, classes


def decode_archive(archive: Path) -> tuple[dict[str, Tensor], list[str]]:
    """Decode every cifar10/{train,test}/{class}/*.jpg member, in sorted member order, to uint8 NCHW tensors."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = _entries(zf)
            classes = _classes(archive, entries)
            pixels = np.empty((len(entries), SIDE, SIDE, 3), dtype=np.uint8)
            described = track(entries, description="decoding CIFAR-10 JPEGs (once)", transient=True)
            for i, (member, _, _) in enumerate(described):
                pixels[i] = _decode(zf, member, archive)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a readable zip ({e}); copy the archive again from the data snapshot") from e
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    label = {name: i for i, name in enumerate(classes)}
    y = torch.tensor([label[cls] for _, _, cls in entries], dtype=torch.int64)
    tensors: dict[str, Tensor] = {}
    for split in SPLITS:
        index = torch.tensor([i for i, (_, s, _) in enumerate(entries) if s == split])
        tensors[f"x_{split}"] = x.index_select(0, index).contiguous()
        tensors[f"y_{split}"] = y.index_select(0, index)
    return tensors, classes


def _entries(zf: zipfile.ZipFile) -> list[tuple[str, str, str]]:
    """(member, split, class) of each image member, sorted by name so the order never depends on the zip's."""
    matches = (_MEMBER.fullmatch(name) for name in zf.namelist())
    return sorted((m.group(0), m.group(1), m.group(2)) for m in matches if m)


def _classes(archive: Path, entries: list[tuple[str, str, str]]) -> list[str]:
    """Class names, sorted, from the train folders; the test folders must name the same classes."""
    found = {split: sorted({cls for _, s, cls in entries if s == split}) for split in SPLITS}
    if not found["train"] or found["train"] != found["test"]:
        raise DataError(
            f"{archive}: expected members cifar10/{{train,test}}/<class>/*.jpg with the same classes in both; "
            f"found train classes {found['train']}, test classes {found['test']}"
        )
    return found["train"]


def _decode(zf: zipfile.ZipFile, member: str, archive: Path) -> np.ndarray:
    """One member as [32, 32, 3] uint8; the size is checked before decoding, so no oversized image is expanded."""
    try:
        with Image.open(io.BytesIO(zf.read(member))) as image:
            if image.size != (SIDE, SIDE):
                raise DataError(f"{archive}: member {member} is {image.width}x{image.height}, expected {SIDE}x{SIDE}")
            return np.asarray(image.convert("RGB"))
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{archive}: member {member} is not a readable JPEG ({e}); copy the archive again") from e


def _payload_digest(tensors: dict[str, Tensor], classes_json: str) -> str:
    """SHA-256 over everything a load returns, so that damage anywhere in the cache file is noticed."""
    digest = hashlib.sha256(classes_json.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().data)
    return digest.hexdigest()


def _write_cache(path: Path, tensors: dict[str, Tensor], classes: list[str], key: str) -> None:
    """Written atomically: readers see the old file or the whole new one."""
    classes_json = json.dumps(classes)
    metadata = {
        "format": CACHE_FORMAT,
        "archive_sha256": key,
        "payload_sha256": _payload_digest(tensors, classes_json),
        "classes": classes_json,
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read_cache(path: Path, key: str) -> tuple[dict[str, Tensor], list[str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise _StaleCache(f"unreadable ({e})") from e
    if metadata.get("format") != CACHE_FORMAT or metadata.get("archive_sha256") != key:
        raise _StaleCache("written by another version or for another archive")
    if sorted(tensors) != sorted(f"{v}_{s}" for v in "xy" for s in SPLITS):
        raise _StaleCache(f"unexpected tensors {sorted(tensors)}")
    classes_json = metadata.get("classes", "")
    if metadata.get("payload_sha256") != _payload_digest(tensors, classes_json):
        raise _StaleCache("contents do not match their recorded digest")
    return tensors, json.loads(classes_json)
