"""Reading pickled data files without letting them run code.

A pickle can call any importable function while it loads. Data files that come as pickles (MNIST-1D, Planetoid)
are therefore read only after their sha256 matched a pinned value (`checksums.read_verified`), and then with an
Unpickler that resolves a short allowlist of globals (numpy arrays, and whatever else the caller names) and
refuses every other one.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from kdforge.errors import DataError

# What `np.ndarray.__reduce__` refers to: numpy 1 pickles name numpy.core, numpy 2 pickles numpy._core.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
NUMPY: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed`; any other global is refused."""

    def __init__(self, file: io.BytesIO, allowed: dict[tuple[str, str], Any], encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def load_restricted(data: bytes, path: Path, allowed: dict[tuple[str, str], Any] = NUMPY,
                    encoding: str = "ASCII") -> Any:
    """Unpickle `data` (the verified bytes of `path`) with only `allowed` globals; a refused or broken pickle is a
    DataError naming the file."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, encoding).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a plain pickle of the expected data ({e}); copy the file again") from e
