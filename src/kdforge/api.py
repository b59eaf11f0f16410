"""The Python API; the CLI calls nothing else. Run a config, or distill your own modules on your own tensors."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import kdforge.data as data_mod
import kdforge.distillers as distillers
import kdforge.models as models
from kdforge import __version__
from kdforge.config.load import dump_config
from kdforge.config.schema import (
    AugmentConfig, ExperimentConfig, MethodConfig, OptimConfig, RecipeConfig, ScheduleConfig, TrainConfig,
)
from kdforge.data import DataBundle, DataSpec, Split
from kdforge.engine import FitResult, Trainer, seed_everything
from kdforge.errors import CheckpointError, ConfigError
from kdforge.fileio import atomic_write_text
from kdforge.teachers import LiveTeacher


def run(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False,
        bundle: DataBundle | None = None) -> dict[str, Any]:
    """Run one experiment end to end: data, teacher, student, method, training; returns the summary."""
    t0 = time.perf_counter()
    bundle = bundle or data_mod.build(cfg.data)
    teacher = prepare_teacher(cfg, bundle) if _wants_teacher(cfg) else None
    seed_everything(cfg.seed)
    student = models.build(cfg.student, bundle.spec, "student")
    distiller = distillers.build(cfg.method, student, LiveTeacher(teacher) if teacher is not None else None,
                                 label_smoothing=cfg.train.label_smoothing)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    result = Trainer(distiller, bundle, cfg.recipe, run_dir, cfg.data.batch_size, cfg.data.eval_batch_size,
                     cfg.data.augment, label=f"{cfg.method.name} seed {cfg.seed}").fit(resume, overwrite)
    models.save_model(run_dir / "student", student, cfg.student, bundle.spec, extra={"test": result.test})
    summary = _summary(cfg, result, student, teacher, time.perf_counter() - t0)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _wants_teacher(cfg: ExperimentConfig) -> bool:
    """The method needs the teacher, or it is already saved (then a student trained alone is still compared
    with it: agreement and KL); a teacher is never trained only for those metrics."""
    if cfg.teacher is None:
        return False
    return distillers.METHODS[cfg.method.name].needs_teacher or (teacher_dir(cfg) / "model.json").exists()


def _summary(cfg: ExperimentConfig, result: FitResult, student: nn.Module, teacher: nn.Module | None,
             wall: float) -> dict[str, Any]:
    return {
        "name": cfg.name, "method": cfg.method.name, "seed": cfg.seed, "run_dir": cfg.run_dir,
        "kdforge_version": __version__,
        "student": {"model": cfg.student.name, "params": count_params(student)},
        "teacher": None if teacher is None else {"model": cfg.teacher.model.name, "params": count_params(teacher)},
        "epochs": result.epochs, "steps": result.steps, "resumed_from_epoch": result.resumed_from,
        "val": result.val, "test": result.test,
        "train_time_s": result.wall_time_s, "wall_time_s": wall,
    }


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- teachers ---------------------------------------------------------------------------------------------
def teacher_dir(cfg: ExperimentConfig) -> Path:
    """Where the teacher lives: its checkpoint, or a folder keyed by everything that determines its weights."""
    assert cfg.teacher is not None
    if cfg.teacher.checkpoint is not None:
        return Path(cfg.teacher.checkpoint)
    key = json.dumps({"data": cfg.data.model_dump(mode="json"), "model": cfg.teacher.model.model_dump(mode="json"),
                      "recipe": cfg.teacher.recipe.model_dump(mode="json")}, sort_keys=True)
    return Path(cfg.teacher.store_dir) / f"{cfg.teacher.model.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepare_teacher(cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """Load the teacher, training it first from its recipe when no saved copy exists yet."""
    assert cfg.teacher is not None
    path = teacher_dir(cfg)
    if (path / "model.json").exists():
        model, _, spec, _ = models.load_model_with_info(path)
        if spec != bundle.spec:
            raise CheckpointError(f"teacher {path} was trained on {spec}, but the data is {bundle.spec}")
        return model
    if cfg.teacher.recipe is None:
        raise CheckpointError(f"teacher checkpoint {path} does not exist; train it first or give teacher.recipe")
    return train_teacher(cfg, bundle, path)


def train_teacher(cfg: ExperimentConfig, bundle: DataBundle, path: Path) -> nn.Module:
    assert cfg.teacher is not None and cfg.teacher.recipe is not None
    recipe = cfg.teacher.recipe
    seed_everything(recipe.seed)
    model = models.build(cfg.teacher.model, bundle.spec, "teacher.model")
    distiller = distillers.build(MethodConfig(name="ce"), model, None, recipe.train.label_smoothing)
    result = Trainer(distiller, bundle, recipe, path / "run", cfg.data.batch_size, cfg.data.eval_batch_size,
                     cfg.data.augment, label=f"teacher {cfg.teacher.model.name}").fit(overwrite=True)
    models.save_model(path, model, cfg.teacher.model, bundle.spec, extra={"test": result.test, "val": result.val})
    return model.eval()


# ---- your own modules and tensors --------------------------------------------------------------------------
def distill(
    student: nn.Module,
    teacher: nn.Module | None,
    train: Split | tuple[Tensor, Tensor] | Dataset,
    val: Split | tuple[Tensor, Tensor] | Dataset | None = None,
    test: Split | tuple[Tensor, Tensor] | Dataset | None = None,
    *,
    method: str = "kd",
    params: dict[str, Any] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    optim: OptimConfig | None = None,
    schedule: ScheduleConfig | None = None,
    augment: AugmentConfig | None = None,
    num_classes: int | None = None,
    run_dir: str | Path = "runs/api",
    seed: int = 0,
    progress: bool = False,
) -> FitResult:
    """Distill `teacher` into `student` (or train `student` alone with method="ce") on your own data.

    No registration is needed: any modules mapping a batch of inputs to logits work. The student is trained
    in place; the result carries validation and test metrics.
    """
    train_split = as_split(train)
    val_split = as_split(val) if val is not None else train_split
    test_split = as_split(test) if test is not None else val_split
    classes = num_classes or int(train_split.y.max()) + 1
    bundle = DataBundle(DataSpec("custom", tuple(train_split.x.shape[1:]), classes), train_split, val_split,
                        test_split)
    method_cfg = MethodConfig(name=method, params=params or {})
    distiller = distillers.build(method_cfg, student, LiveTeacher(teacher) if teacher is not None else None)
    recipe = RecipeConfig(seed=seed, optim=optim or OptimConfig(), schedule=schedule or ScheduleConfig(),
                          train=TrainConfig(epochs=epochs, progress=progress))
    return Trainer(distiller, bundle, recipe, run_dir, batch_size, augment=augment or AugmentConfig(),
                   label=method).fit(overwrite=True)


def as_split(source: Split | tuple[Tensor, Tensor] | Dataset) -> Split:
    """Hold any (x, y) source as tensors in memory: a Split, a pair of tensors, or a map-style Dataset."""
    if isinstance(source, Split):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        x, y = source
    elif isinstance(source, Dataset):
        items = [source[i] for i in range(len(source))]  # type: ignore[arg-type]
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise ConfigError(f"data must be a Split, an (x, y) pair of tensors or a Dataset, not {type(source).__name__}")
    return Split(x=torch.as_tensor(x).float(), y=torch.as_tensor(y).long())
