"""Teachers of a config: where each lives (a folder keyed by everything that determines its weights), and its
logits on evaluation splits for agreement metrics. Loading or training one is composition: `api.assembly`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdforge.config.schema import ExperimentConfig
from kdforge.data import DataBundle
from kdforge.data.root import cache_dir
from kdforge.engine.metrics import agreement_metrics
from kdforge.engine.result import ExtraMetrics
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
# Recipe keys added later, left out of the key at their defaults (which train as before they existed), so that
# earlier teachers keep their folders.
LATER_KEYS = {("train", "precision"): "fp32", ("train", "accumulate"): 1, ("optim", "no_decay_norm_bias"): False,
              ("schedule", "warmup_steps"): 0}


def without_later_defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    """`recipe` (a dumped recipe, or experiment: its optim, schedule and train sections) without the keys of
    LATER_KEYS that hold their defaults, in place: the fingerprints of teachers and of `reproduce`'s records."""
    for (section, key), default in LATER_KEYS.items():
        if section in recipe and recipe[section].get(key, default) == default:
            recipe[section].pop(key, None)
    return recipe


def teacher_dir(cfg: ExperimentConfig) -> Path:
    """Where the teacher lives: its checkpoint, or a folder keyed by everything that determines its weights."""
    assert cfg.teacher is not None
    if cfg.teacher.checkpoint is not None:
        return Path(cfg.teacher.checkpoint)
    recipe = cfg.teacher.recipe.model_dump(mode="json")
    recipe["train"] = {k: v for k, v in recipe["train"].items() if k not in NO_EFFECT_ON_WEIGHTS}
    without_later_defaults(recipe)
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
