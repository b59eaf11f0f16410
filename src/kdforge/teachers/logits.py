"""The teacher's logits on evaluation splits (for agreement and KL metrics), computed once per teacher and split.

In memory they are shared by every run of one process (a `compare`); on disk, under `$KDFORGE_CACHE`, by every
later process. The disk key is a hash of the teacher's weights and of the split's inputs themselves, so a retrained
teacher or changed data can never be served stale logits; each file's sha256 is checked before it is read, and a
damaged one is recomputed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from kdforge.data.loader import predict
from kdforge.data.types import Split
from kdforge.fileio import TensorFileError, atomic_write_text, read_tensors, tensor_digest, write_tensors


class TeacherLogits:
    """`get(key, teacher, split, ...)`: the teacher's logits on `split`. `key` names the teacher within a process
    (its folder, which every run of a comparison loads anew); `folder` (None: memory only) keeps them on disk."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memo: dict[tuple[str, int], Tensor] = {}
        self._weights: dict[str, str] = {}

    def get(self, key: str, teacher: nn.Module, split: Split, batch_size: int, device: torch.device) -> Tensor:
        if (key, id(split)) not in self._memo:
            self._memo[(key, id(split))] = self._load_or_predict(key, teacher, split, batch_size, device)
        return self._memo[(key, id(split))]

    def _load_or_predict(self, key: str, teacher: nn.Module, split: Split, batch_size: int,
                         device: torch.device) -> Tensor:
        if self.folder is None:
            return predict(teacher, split, batch_size, device)
        if key not in self._weights:
            self._weights[key] = tensor_digest(list(teacher.state_dict().values()))
        name = hashlib.sha256(f"{self._weights[key]}:{split.digest()}".encode()).hexdigest()[:32]
        path, sums = self.folder / f"{name}.safetensors", self.folder / f"{name}.json"
        cached = _read(path, sums)
        if cached is not None:
            return cached
        logits = predict(teacher, split, batch_size, device)
        sha256 = write_tensors(path, {"logits": logits.contiguous()})["sha256"]
        atomic_write_text(sums, json.dumps({"sha256": sha256}))
        return logits


def _read(path: Path, sums: Path) -> Tensor | None:
    """The cached logits, or None when absent, unreadable or not matching their recorded sha256."""
    try:
        return read_tensors(path, json.loads(sums.read_text())["sha256"])["logits"]
    except (TensorFileError, OSError, ValueError, KeyError, TypeError):
        return None
