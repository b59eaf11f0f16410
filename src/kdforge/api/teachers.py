"""Teachers of a config: where each lives (a folder keyed by everything that determines its weights), loading it
or training it once from its recipe, and its logits on evaluation splits for agreement metrics."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

import kdforge.methods as methods
import kdforge.models as models
from kdforge.config.schema import ExperimentConfig, MethodConfig
from kdforge.data import DataBundle
from kdforge.data.root import cache_dir
from kdforge.engine import Runtime, Trainer, seed_everything
from kdforge.engine.metrics import agreement_metrics, corruption_metrics
from kdforge.engine.trainer import ExtraMetrics
from kdforge.errors import CheckpointError, TrainingDiverged
from kdforge.methods import Setup
from kdforge.models.infodrop import finetune_phase, finetune_recipe
from kdforge.teachers.logits import TeacherLogits


def teacher_logits_dir() -> Path:
    """Where saved teachers' val/test logits are kept between processes ($KDFORGE_CACHE/teacher_logits)."""
    return cache_dir() / "teacher_logits"


def teacher_agreement(store: TeacherLogits, key: str, teacher: nn.Module, bundle: DataBundle, batch_size: int,
                      device: torch.device) -> ExtraMetrics:
    """Agreement and KL with the teacher on a split, for the engine's `extra_metrics`; the teacher's logits come
    from `store` (computed once per teacher `key` and split)."""
    def extra(split: str, logits: Tensor) -> dict[str, float]:
        return agreement_metrics(logits, store.get(key, teacher, bundle.split(split), batch_size, device))
    return extra


# Training settings that change what is shown or written, never the weights: not part of a teacher's identity.
NO_EFFECT_ON_WEIGHTS = frozenset({"progress", "tensorboard", "log_every", "eval_every", "checkpoint_every",
                                  "checkpoint_steps", "eval_test"})


def teacher_dir(cfg: ExperimentConfig) -> Path:
    """Where the teacher lives: its checkpoint, or a folder keyed by everything that determines its weights."""
    assert cfg.teacher is not None
    if cfg.teacher.checkpoint is not None:
        return Path(cfg.teacher.checkpoint)
    recipe = cfg.teacher.recipe.model_dump(mode="json")
    recipe["train"] = {k: v for k, v in recipe["train"].items() if k not in NO_EFFECT_ON_WEIGHTS}
    data = {k: v for k, v in cfg.data.model_dump(mode="json").items() if k not in ("eval_batch_size",
                                                                                   "eval_corruptions")}
    model = cfg.teacher.model.model_dump(mode="json")
    if model.get("infodrop") is None:  # absent, as before the option existed: earlier teachers keep their folders
        model.pop("infodrop", None)
    elif model["infodrop"]["finetune_epochs"] == 0:  # likewise for InfoDrop teachers without the fine-tune phase
        model["infodrop"] = {k: v for k, v in model["infodrop"].items() if not k.startswith("finetune_")}
    key = json.dumps({"data": data, "model": model, "recipe": recipe},
                     sort_keys=True)
    return Path(cfg.teacher.store_dir) / f"{cfg.teacher.model.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def prepare_teacher(cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """Load the teacher, training it first from its recipe when no saved copy exists yet."""
    assert cfg.teacher is not None
    path = teacher_dir(cfg)
    if (path / "model.json").exists():
        model, saved, spec, _ = models.load_model_with_info(path)
        if spec != bundle.spec:
            raise CheckpointError(f"teacher {path} was trained on {spec}, but the data is {bundle.spec}")
        if saved != cfg.teacher.model:
            raise CheckpointError(f"teacher {path} is a {saved.name} {saved.params}, but teacher.model is "
                                  f"{cfg.teacher.model.name} {cfg.teacher.model.params}; make them agree")
        return model
    if cfg.teacher.recipe is None:
        raise CheckpointError(f"teacher checkpoint {path} does not exist; train it first or give teacher.recipe")
    return train_teacher(cfg, bundle, path)


def train_teacher(cfg: ExperimentConfig, bundle: DataBundle, path: Path) -> nn.Module:
    assert cfg.teacher is not None and cfg.teacher.recipe is not None
    recipe = finetune_recipe(cfg.teacher.recipe, cfg.teacher.model.infodrop)
    seed_everything(recipe.seed)
    model = models.build(cfg.teacher.model, bundle.spec, "teacher.model")
    method = methods.build(MethodConfig(name="ce"), model, None, Setup.for_data(bundle.spec, bundle.train, recipe.train.label_smoothing))
    runtime = Runtime.from_env(recipe.train.device)
    trainer = Trainer(method, bundle, recipe, path / "run", cfg.data.batch_size, cfg.data.eval_batch_size,
                      cfg.data.augment, label=f"teacher {cfg.teacher.model.name}", runtime=runtime)
    finetune_phase(model, trainer, "teacher.model.infodrop")
    try:
        result = trainer.fit(overwrite=True)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"training the teacher {cfg.teacher.model.name} from teacher.recipe: {e} "
                               "(the keys are under teacher.recipe)") from None
    if bundle.test is not None:  # the teacher's own robustness, in its model.json
        result.test.update(corruption_metrics(model, bundle.test, cfg.data.eval_corruptions, cfg.data.eval_batch_size,
                                              runtime.device))
    if runtime.is_main:
        models.save_model(path, model, cfg.teacher.model, bundle.spec,
                          extra={"test": dict(result.test), "val": dict(result.val)})
    runtime.barrier()
    return model.eval()


