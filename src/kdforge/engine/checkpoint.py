"""Resumable checkpoints: weights as safetensors, optimizer/scheduler/RNG state via torch.save, both checksummed.

Layout: `checkpoints/epoch_0003/{weights.safetensors, state.pt, meta.json}` plus `checkpoints/latest.json`
naming the newest complete one. A checkpoint folder is built under a temporary name and renamed into place,
and `latest.json` is replaced atomically after it, so a kill at any moment leaves the last good one intact.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kdforge.errors import CheckpointError
from kdforge.fileio import atomic_write_text, sha256_of

WEIGHTS, STATE, META, LATEST = "weights.safetensors", "state.pt", "meta.json", "latest.json"


@dataclass
class Checkpoint:
    path: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def save_checkpoint(ckpt_dir: Path, epoch: int, module: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write epoch `epoch`'s checkpoint atomically, point latest.json at it, drop all but the newest `keep`."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"epoch_{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=f".{final.name}."))
    try:
        weights = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(weights, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        meta = {"epoch": epoch, "sha256": {WEIGHTS: sha256_of(tmp / WEIGHTS), STATE: sha256_of(tmp / STATE)}}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        _fsync_dir_files(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_dir / LATEST, json.dumps({"checkpoint": final.name, "epoch": epoch}))
    _prune(ckpt_dir, keep)
    return final


def _fsync_dir_files(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _prune(ckpt_dir: Path, keep: int) -> None:
    done = sorted(p for p in ckpt_dir.glob("epoch_*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    pointer = ckpt_dir / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{pointer} is corrupt ({err}); delete it to resume from scratch") from None
    return ckpt_dir / name


def load_checkpoint(path: Path) -> Checkpoint:
    """Verify both files' checksums, then load: weights via safetensors, state with weights_only=True."""
    meta_path = path / META
    try:
        meta = json.loads(meta_path.read_text())
        sums = meta["sha256"]
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path} is missing: {path} is not a complete kdforge checkpoint") from None
    except (ValueError, KeyError):
        raise CheckpointError(f"{meta_path} is corrupt: not the JSON a kdforge checkpoint writes") from None
    for name in (WEIGHTS, STATE):
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{f} is missing; the checkpoint is incomplete, resume from an earlier one")
        if sha256_of(f) != sums.get(name):
            raise CheckpointError(f"{f} is truncated or corrupt (sha256 mismatch); resume from an earlier checkpoint")
    try:
        weights = load_file(str(path / WEIGHTS))
        state = torch.load(path / STATE, weights_only=True)
    except (SafetensorError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path} could not be read ({err})") from None
    return Checkpoint(path=path, weights=weights, state=state)
