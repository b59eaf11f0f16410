"""Resumable checkpoints: weights as safetensors, optimizer/scheduler/RNG state via torch.save, both checksummed.

Layout: `checkpoints/epoch_0003/{weights.safetensors, state.pt, meta.json}` (end of epoch 3; within an epoch
`epoch_0004_batch_000120`) plus `checkpoints/latest.json` naming the newest complete one. A checkpoint folder is built under a temporary name and renamed into place,
and `latest.json` is replaced atomically after it, so a kill at any moment leaves the last good one intact.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.errors import CheckpointError
from kdforge.fileio import (DIR_MODE, FILE_MODE, TensorFileError, atomic_write_text, read_checked, read_tensors,
                            write_checked, write_tensors)

WEIGHTS, STATE, META, LATEST = "weights.safetensors", "state.pt", "meta.json", "latest.json"


@dataclass
class Checkpoint:
    path: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def checkpoint_name(epoch: int, batch: int | None = None) -> str:
    """`epoch_0003` at the end of epoch 3; `epoch_0003_batch_000120` after 120 batches of epoch 3."""
    return f"epoch_{epoch:04d}" if batch is None else f"epoch_{epoch:04d}_batch_{batch:06d}"


_NAME = re.compile(r"^epoch_(\d{4,})(?:_batch_(\d{6,}))?$")


def _order(name: str) -> tuple[int, float]:
    """Training order of checkpoint folders: mid-epoch ones of epoch e come before the end of epoch e."""
    m = _NAME.match(name)
    assert m is not None
    return int(m.group(1)), float(m.group(2)) if m.group(2) else float("inf")


def save_checkpoint(ckpt_dir: Path, name: str, module: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `name` atomically, point latest.json at it, drop all but the newest `keep`.

    Leftovers of writes that were killed (temporary folders and files) are removed first: the run lock makes this
    process the folder's only writer.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _remove_orphans(ckpt_dir)
    final = ckpt_dir / name
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=f".{final.name}."))
    try:
        # Each file is written once into the temporary folder (not atomically: the folder's rename is what makes
        # the checkpoint atomic), its sha256 taken from the bytes in memory, and every file fsynced once below.
        weights = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        weights_sum = write_tensors(tmp / WEIGHTS, weights, atomic=False)["sha256"]
        buffer = io.BytesIO()
        torch.save(state, buffer)
        state_sum = write_checked(tmp / STATE, buffer.getbuffer(), atomic=False)["sha256"]
        meta = {"epoch": state.get("epoch"), "batch": state.get("batch"), "step": state.get("step"),
                "sha256": {WEIGHTS: weights_sum, STATE: state_sum}}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        _fsync_dir_files(tmp)
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes 0700
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = {"checkpoint": final.name, "epoch": state.get("epoch"), "batch": state.get("batch"),
               "step": state.get("step")}
    atomic_write_text(ckpt_dir / LATEST, json.dumps(pointer))
    _prune(ckpt_dir, keep)
    return final


def _fsync_dir_files(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(f, FILE_MODE)


def _remove_orphans(ckpt_dir: Path) -> None:
    for leftover in ckpt_dir.glob(".*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        elif leftover.name.endswith(".tmp"):
            leftover.unlink(missing_ok=True)


def _prune(ckpt_dir: Path, keep: int) -> None:
    done = sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and _NAME.match(p.name)), key=lambda p: _order(p.name))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The checkpoint latest.json names, or None when there is none; a pointer that is not what this module
    writes, or that names anything but a checkpoint folder beside it (`../x`, an absolute path), is refused."""
    pointer = ckpt_dir / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{pointer} is corrupt (not the JSON a kdforge run writes); delete it to resume from "
                              "the start, or start again with --overwrite") from None
    if not isinstance(name, str) or not _NAME.match(name):
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint folder of this run; delete it "
                              "or start again with --overwrite")
    return ckpt_dir / name


def load_checkpoint(path: Path) -> Checkpoint:
    """Verify both files' checksums, then load: weights via safetensors, state with weights_only=True."""
    meta_path = path / META
    try:
        sums = json.loads(meta_path.read_text())["sha256"]
        if not isinstance(sums, dict):
            raise TypeError
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path} is missing: {path} is not a complete kdforge checkpoint") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise CheckpointError(f"{meta_path} is corrupt: not the JSON a kdforge checkpoint writes") from None
    for name in (WEIGHTS, STATE):
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{f} is missing; the checkpoint is incomplete, resume from an earlier one")
    try:  # the state first: when both are damaged, the error names state.pt, as it always has
        state = torch.load(io.BytesIO(read_checked(path / STATE, str(sums.get(STATE)))), weights_only=True)
        weights = read_tensors(path / WEIGHTS, str(sums.get(WEIGHTS)))
    except TensorFileError as err:
        if err.problem == "mismatch":
            raise CheckpointError(f"{err.path} is truncated or corrupt (sha256 mismatch); resume from an earlier "
                                  "checkpoint") from None
        raise CheckpointError(f"{path} could not be read safely ({err.detail or err.problem}); resume from an "
                              "earlier checkpoint") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} could not be read safely ({first}); resume from an earlier checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE} does not hold a checkpoint's state; resume from an earlier checkpoint")
    return Checkpoint(path=path, weights=weights, state=state)
