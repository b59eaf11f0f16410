"""The teacher's logits on evaluation splits (for agreement and KL metrics), computed once per teacher and split.

In memory they are shared by every run of one process (a `compare`); on disk, under `$KDFORGE_CACHE`, by every
later process. The disk key is a hash of the teacher's weights and of the split's inputs themselves, so a retrained
teacher or changed data can never be served stale logits; each file's sha256 is checked before it is read, and a
damaged one is recomputed.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from kdforge.data.types import DataBundle, Split
from kdforge.engine.metrics import agreement_metrics, predict
from kdforge.fileio import atomic_write


def tensor_digest(tensors: list[Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def split_digest(split: Split) -> str:
    """A digest of everything a model sees of a split: its inputs, and a graph's features and edges."""
    inputs = [split.x] if split.graph is None else [split.x, split.graph.x, split.graph.edge_index]
    return tensor_digest(inputs)


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
        name = hashlib.sha256(f"{self._weights[key]}:{split_digest(split)}".encode()).hexdigest()[:32]
        path, sums = self.folder / f"{name}.safetensors", self.folder / f"{name}.json"
        cached = _read(path, sums)
        if cached is not None:
            return cached
        logits = predict(teacher, split, batch_size, device)
        data = save_safetensors({"logits": logits.contiguous()})
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
        atomic_write(sums, lambda tmp: tmp.write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest()})))
        return logits

    def metrics_fn(self, key: str, teacher: nn.Module, bundle: DataBundle, batch_size: int,
                   device: torch.device) -> Callable[[str, Tensor], dict[str, float]]:
        """Agreement and KL with the teacher on a split, for the engine's `extra_metrics`."""
        def extra(split: str, logits: Tensor) -> dict[str, float]:
            return agreement_metrics(logits, self.get(key, teacher, bundle.split(split), batch_size, device))
        return extra


def _read(path: Path, sums: Path) -> Tensor | None:
    """The cached logits, or None when absent, unreadable or not matching their recorded sha256."""
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != json.loads(sums.read_text())["sha256"]:
            return None
        return load_safetensors(data)["logits"]
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None
