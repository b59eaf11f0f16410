"""Shared file I/O: atomic writes (temp file in the same folder + fsync + rename), streamed checksums, and the one
verified pair for tensors (`write_tensors` / `read_tensors`: safetensors with the sha256 kept beside them), used by
saved models, checkpoints, teacher logits and the teacher-output cache."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdforge.errors import KdforgeError

if TYPE_CHECKING:
    from torch import Tensor


# The process umask, read once (reading it means setting it): files and folders made through temporary names get
# the permissions a plain open()/mkdir() would give them, so a store shared by a group stays usable.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename onto `path`: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, FILE_MODE)  # mkstemp makes 0600
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- tensors: safetensors files whose sha256 is kept beside them (a manifest, model.json, meta.json) ------------
class TensorFileError(KdforgeError):
    """A tensors file failed its check: `problem` is "missing", "unreadable" (an OS error), "mismatch" (its sha256)
    or "invalid" (not safetensors).
    Each reader turns it into its own error (a checkpoint, a saved model, a cache shard) saying what to do."""

    def __init__(self, path: Path, problem: str, detail: str = "") -> None:
        super().__init__(f"{path}: {problem}{f' ({detail})' if detail else ''}")
        self.path, self.problem, self.detail = path, problem, detail


def write_tensors(path: str | Path, tensors: Mapping[str, Tensor], *, atomic: bool = True) -> dict[str, Any]:
    """Write `tensors` as a safetensors file (the bytes of `safetensors.torch.save`, no metadata); returns
    {"sha256", "bytes"} for the record beside it, which `read_tensors` checks. `atomic` as `write_checked`."""
    from safetensors.torch import save

    return write_checked(path, save(dict(tensors)), atomic=atomic)


def write_checked(path: str | Path, data: bytes | memoryview, *, atomic: bool = True) -> dict[str, Any]:
    """Write `data` to `path`; {"sha256", "bytes"} of it, taken from the bytes in memory (no re-read), for
    `read_checked`. `atomic=False` writes in place, unsynced: for a file inside a temporary folder that is
    fsynced and renamed into place as a whole (a checkpoint)."""
    if atomic:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    else:
        with open(path, "wb") as f:
            f.write(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def read_checked(path: str | Path, sha256: str) -> bytes:
    """The bytes of a file `write_checked` wrote, after checking them against `sha256`; TensorFileError when
    missing, unreadable or different."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TensorFileError(path, "missing") from None
    except OSError as e:
        raise TensorFileError(path, "unreadable", str(e.strerror or e)) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise TensorFileError(path, "mismatch", f"{len(data)} bytes")
    return data


def read_tensors(path: str | Path, sha256: str, mmap: bool = False) -> dict[str, Tensor]:
    """The tensors of a file `write_tensors` wrote, after checking its sha256 against `sha256`; with `mmap` they
    are views of a copy-on-write memory map (only the rows used are ever read). TensorFileError when missing,
    unreadable, different or not safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not mmap:
        data = read_checked(path, sha256)
        try:
            return load(data)
        except SafetensorError as e:
            raise TensorFileError(path, "invalid", str(e)) from None
    try:
        if sha256_of(path) != sha256:
            raise TensorFileError(path, "mismatch")
        return _mmap_safetensors(path)
    except FileNotFoundError:
        raise TensorFileError(path, "missing") from None
    except OSError as e:
        raise TensorFileError(path, "unreadable", str(e.strerror or e)) from None
    except (ValueError, KeyError, TypeError, struct.error) as e:  # a header that is not safetensors'
        raise TensorFileError(path, "invalid", str(e)[:200]) from None


_NUMPY_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "I64": "int64", "I32": "int32",
                 "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _mmap_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file as views of a copy-on-write memory map (nothing is read up front)."""
    import numpy as np
    import torch

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape, dtype = tuple(info["shape"]), np.dtype(_NUMPY_DTYPES[info["dtype"]])
        if end == begin:
            out[name] = torch.from_numpy(np.zeros(shape, dtype=dtype))
            continue
        arr = np.memmap(path, dtype=dtype, mode="c", offset=8 + size + begin, shape=shape)
        out[name] = torch.from_numpy(arr)
    return out


def tensor_digest(tensors: Iterable[Tensor]) -> str:
    """sha256 of tensors' dtypes, shapes and bytes, in order: a key for what was computed from them (a teacher's
    weights, a split's inputs)."""
    import torch

    h = hashlib.sha256()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        # the bytes as a buffer (no copy of the tensor's bytes): the same digest, in half the time on a 188 MB split
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()
