"""What a teacher cache is for: its settings, the request a run makes, the key its contents depend on (kept
readable in the manifest, so a mismatch says what differs) and the folder it lives in by default."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdforge.data import DataBundle
from kdforge.data.augment import AugmentSettings
from kdforge.data.root import cache_dir
from kdforge.fileio import tensor_digest

FORMAT = 1


@dataclass(frozen=True)
class CacheSettings:
    """How the cache is stored and used (the YAML's `teacher.cache`, whose schema documents and validates each
    field; the defaults are its): where, how many views per sample, past them `cycle` or `live`, `full` or `topk`
    logits (`rest` of the mass `uniform` or `drop`), the storage dtype, rows per shard, a size limit, and whether a
    mismatched or missing cache is refused or (re)built."""

    path: str | None = None
    epochs: int = 1
    after: str = "cycle"
    storage: str = "full"
    k: int = 5
    rest: str = "uniform"
    dtype: str = "float16"
    shard_rows: int = 65536
    max_gb: float = 8.0
    on_mismatch: str = "refuse"
    on_missing: str = "build"


@dataclass(frozen=True)
class CacheRequest:
    """Everything a cache's contents depend on, besides the teacher and the data it is built from."""

    cfg: CacheSettings
    augment: AugmentSettings
    splits: tuple[str, ...]
    features: tuple[str, ...] = ()
    batch_size: int = 128  # how views are drawn (mixing partners come from the same batch): recorded, not keyed
    seed: int = 0

    def epochs(self) -> int:
        """Views worth recording: without augmentation every epoch's view is the raw sample, so one."""
        return self.cfg.epochs if self.augment.on else 1


def cache_key(teacher: nn.Module, bundle: DataBundle, req: CacheRequest) -> dict[str, Any]:
    """The parts of the key, readable, as the manifest keeps them (a mismatch names the part that differs)."""
    return {
        "format": FORMAT,
        "teacher_weights": tensor_digest(list(teacher.state_dict().values())),
        "data": {name: bundle.split(name).digest() for name in req.splits},
        "augment": req.augment.to_json(),
        "epochs": req.epochs(),
        "storage": {"kind": req.cfg.storage, "k": req.cfg.k if req.cfg.storage == "topk" else None,
                    "dtype": req.cfg.dtype},
        "features": sorted(req.features),
    }


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Readable names of the key parts that differ."""
    out = []
    for part in sorted(set(saved) | set(wanted)):
        if saved.get(part) != wanted.get(part):
            if isinstance(wanted.get(part), dict) and isinstance(saved.get(part), dict):
                inner = [k for k in sorted(set(saved[part]) | set(wanted[part])) if saved[part].get(k) != wanted[part].get(k)]
                out += [f"{part}.{k} (cached {_short(saved[part].get(k))}, this run {_short(wanted[part].get(k))})"
                        for k in inner]
            else:
                out.append(f"{part} (cached {_short(saved.get(part))}, this run {_short(wanted.get(part))})")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text[:12] + "…" if len(text) > 40 and text.startswith('"') else text[:60]


def default_path(key: dict[str, Any]) -> Path:
    """$KDFORGE_CACHE/teacher_outputs/<key hash>: where a cache without `teacher.cache.path` lives."""
    return cache_dir() / "teacher_outputs" / key_hash(key)
