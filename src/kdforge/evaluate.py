"""Evaluate a saved model on a registered data set (what `kdforge eval` runs): a model folder, a run folder (its
`student/`, or its latest checkpoint when the run was stopped before the end) or one checkpoint folder. The data
set is the one the folder records (the run's config.yaml, else model.json) unless one is given."""
from __future__ import annotations

from pathlib import Path

import yaml
from torch import nn

import kdforge.models as models
from kdforge.api import build_data, build_model
from kdforge.config import load_config
from kdforge.config.schema import DataConfig, ExperimentConfig
from kdforge.data.types import DataSpec
from kdforge.engine import evaluate, resolve_device
from kdforge.engine.checkpoint import latest_checkpoint, load_checkpoint
from kdforge.errors import CheckpointError


def evaluate_saved(path: str | Path, data: str | None = None, root: str | None = None,
                   split: str = "test") -> dict[str, float]:
    """Metrics of the model saved at `path` on `split` of `data` (default: the data set the folder records)."""
    path = Path(path)
    if not (path / "model.json").exists() and (path / "student" / "model.json").exists():
        path = path / "student"
    elif (path / "student" / "model.safetensors").exists() and not (path / "model.json").exists():
        raise CheckpointError(f"{path}/student holds only the weights of your own module (distill() on a model no "
                              "registered builder made); load them into it with safetensors.torch.load_file")
    if (path / "model.json").exists():
        model, _, spec, _ = models.load_model_with_info(path)
        recorded = _run_config(path.parent)  # a run's student/: its config.yaml knows the data's params too
        if recorded is None and data is None and spec.name == "custom":
            raise CheckpointError(f"{path} was trained by distill() on your own data: name a data set with --data")
        data_cfg = _data(recorded.data if recorded is not None else DataConfig(name=spec.name), data, root)
        bundle = build_data(data_cfg)
        _check_shapes(path, spec, bundle.spec, data_cfg.name)
    else:
        checkpoint, cfg = _checkpoint_of(path)
        bundle = build_data(_data(cfg.data, data, root))
        model = _student_from(checkpoint, cfg, bundle.spec)
    return evaluate(model, getattr(bundle, split), 1000, resolve_device("auto"))


def _data(recorded: DataConfig, name: str | None, root: str | None) -> DataConfig:
    """The recorded data section, or the data set `name` when another is asked for; `root` where given."""
    chosen = recorded if name is None or name == recorded.name else DataConfig(name=name)
    return chosen.model_copy(update={"root": root}) if root is not None else chosen


def _run_config(run_dir: Path) -> ExperimentConfig | None:
    """The run's experiment config; None without one, or for a distill() run (its config.yaml records the call's
    arguments under `distill:`, not an experiment)."""
    path = run_dir / "config.yaml"
    if not path.is_file() or "distill" in (yaml.safe_load(path.read_text()) or {}):
        return None
    return load_config(path)


def _checkpoint_of(path: Path) -> tuple[Path, ExperimentConfig]:
    """(checkpoint folder, its run's config) for a checkpoint folder, a run's checkpoints/ or a run folder."""
    if (path / "meta.json").exists():
        checkpoint, run_dir = path, path.parent.parent
    else:
        ckpt_dir = path if (path / "latest.json").exists() else path / "checkpoints"
        checkpoint, run_dir = latest_checkpoint(ckpt_dir), ckpt_dir.parent  # type: ignore[assignment]
        if checkpoint is None:
            raise CheckpointError(f"{path} holds no model.json, student/ or checkpoints: give a model folder, a run "
                                  "folder or a checkpoint folder (runs/<name>/<method>/seed0/checkpoints/epoch_0009)")
    cfg = _run_config(run_dir)
    if cfg is None:
        raise CheckpointError(f"{run_dir / 'config.yaml'} is missing: the checkpoint's model is not known")
    return checkpoint, cfg


def _student_from(checkpoint: Path, cfg: ExperimentConfig, spec: DataSpec) -> nn.Module:
    """The student of the run `cfg` with the checkpoint's `student.*` weights."""
    model = build_model(cfg.student, spec, "student")
    weights = {k.removeprefix("student."): v for k, v in load_checkpoint(checkpoint).weights.items()
               if k.startswith("student.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint}: its student weights do not fit {cfg.student.name} on "
                              f"{cfg.data.name} ({str(e).splitlines()[0][:200]})") from None
    return model


def _check_shapes(path: Path, spec: DataSpec, data: DataSpec, name: str) -> None:
    if spec.input_shape != data.input_shape or spec.num_classes != data.num_classes:
        raise CheckpointError(f"{path} expects inputs {spec.input_shape} and {spec.num_classes} classes; "
                              f"{name} has {data.input_shape} and {data.num_classes}")
