"""Save a trained model as a folder (model.safetensors + model.json with its sha256) and load it back; no pickle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge import __version__
from kdforge.data.types import DataSpec
from kdforge.errors import CheckpointError, ConfigError
from kdforge.fileio import TensorFileError, atomic_write_text, read_tensors, write_tensors
from kdforge.models.build import ModelSpec, build

WEIGHTS, META = "model.safetensors", "model.json"
FORMAT, FORMAT_VERSION = "kdforge.model", 1


def save_model(
    path: str | Path, model: nn.Module, cfg: ModelSpec, spec: DataSpec, extra: dict[str, Any] | None = None
) -> Path:
    """Write `path/model.safetensors` and `path/model.json` (name, params, spec, sha256, version, `extra`), atomically.

    The weights are first loaded into `build(cfg, spec)`, so a model that could not be loaded back is never
    written. `extra` (e.g. metrics) must be JSON-serializable. Returns the folder.
    """
    folder = Path(path)
    state = _checked_state(model, cfg, spec)
    try:
        json.dumps(extra or {})
    except TypeError as e:
        raise ValueError(f"save_model: `extra` must be JSON-serializable: {e}") from e
    sums = write_tensors(folder / WEIGHTS, state)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kdforge_version": __version__,
        "model": cfg.to_json(),
        "spec": spec.to_json(),
        "weights": {"file": WEIGHTS, "bytes": sums["bytes"], "sha256": sums["sha256"]},
        "extra": extra or {},
    }
    atomic_write_text(folder / META, json.dumps(meta, indent=2) + "\n")
    return folder


def _checked_state(model: nn.Module, cfg: ModelSpec, spec: DataSpec) -> dict[str, torch.Tensor]:
    """The state dict as separate contiguous CPU copies (no shared storage), checked to fit `build(cfg, spec)`."""
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    try:
        build(cfg, spec).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"save_model: the model's weights do not fit {cfg.name!r} {cfg.params} on {spec}: {e}") from e
    return state


def load_model(path: str | Path) -> nn.Module:
    """The model saved by `save_model` in folder `path`, checksum-verified, in eval mode on the CPU."""
    return load_model_with_info(path)[0]


def load_model_with_info(path: str | Path) -> tuple[nn.Module, ModelSpec, DataSpec, dict[str, Any]]:
    """Like `load_model`, also returning the model config, the data spec and the saved `extra` metadata."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no saved model folder there (expected {META} and {WEIGHTS})")
    cfg, spec, sha256, extra = _read_meta(folder / META)
    state = _read_weights(folder / WEIGHTS, sha256)
    try:
        model = build(cfg, spec, key_path="model")
    except ConfigError as e:
        raise CheckpointError(f"{folder / META}: the saved model cannot be rebuilt: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder / WEIGHTS}: weights do not fit model {cfg.name!r} {cfg.params}: {e}") from e
    return model.eval(), cfg, spec, extra


def _read_meta(meta_path: Path) -> tuple[ModelSpec, DataSpec, str, dict[str, Any]]:
    """The model config, data spec, weights sha256 and `extra` recorded in model.json."""
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{meta_path}: missing; is this a folder written by save_model?") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not readable JSON ({e}); re-save the model") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a kdforge model file (format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version")
        raise CheckpointError(f"{meta_path}: format_version {found!r}; this kdforge reads {FORMAT_VERSION}")
    try:
        cfg = ModelSpec.from_json(meta["model"])
        spec = DataSpec.from_json(meta["spec"])
        sha256 = str(meta["weights"]["sha256"])
        extra = dict(meta.get("extra") or {})
    except KeyError as e:
        raise CheckpointError(f"{meta_path}: missing key {e.args[0]!r}; re-save the model") from e
    except (TypeError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        raise CheckpointError(f"{meta_path}: malformed metadata ({e}); re-save the model") from e
    return cfg, spec, sha256, extra


def _read_weights(weights_path: Path, sha256: str) -> dict[str, torch.Tensor]:
    try:
        return read_tensors(weights_path, sha256)
    except TensorFileError as e:
        if e.problem == "mismatch":
            raise CheckpointError(f"{weights_path}: corrupt or truncated (sha256 does not match model.json, "
                                  f"{e.detail}); re-save or re-train the model") from None
        if e.problem == "invalid":
            raise CheckpointError(f"{weights_path}: not valid safetensors ({e.detail}); re-save or re-train the "
                                  "model") from None
        raise CheckpointError(f"{weights_path}: cannot be read ({e.detail or e.problem}); re-save or re-train "
                              "the model") from None
