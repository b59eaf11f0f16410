"""Evaluate a saved model on a registered data set (what `kdforge eval` runs)."""
from __future__ import annotations

from pathlib import Path

import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.engine import evaluate, resolve_device
from kdforge.errors import CheckpointError


def evaluate_saved(path: str | Path, data: str, root: str | None = None, split: str = "test") -> dict[str, float]:
    """Metrics of the model saved at `path` (a model folder, or a run folder holding `student/`)."""
    path = Path(path)
    if not (path / "model.json").exists() and (path / "student" / "model.json").exists():
        path = path / "student"
    elif (path / "student" / "model.safetensors").exists() and not (path / "model.json").exists():
        raise CheckpointError(f"{path}/student holds only the weights of your own module (distill() on a model no "
                              "registered builder made); load them into it with safetensors.torch.load_file")
    model, _, spec, _ = models.load_model_with_info(path)
    bundle = build_data(DataConfig(name=data, root=root))
    if spec.input_shape != bundle.spec.input_shape or spec.num_classes != bundle.spec.num_classes:
        raise CheckpointError(f"{path} expects inputs {spec.input_shape} and {spec.num_classes} classes; "
                              f"{data} has {bundle.spec.input_shape} and {bundle.spec.num_classes}")
    return evaluate(model, getattr(bundle, split), 1000, resolve_device("auto"))
