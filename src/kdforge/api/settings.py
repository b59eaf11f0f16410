"""The one place the YAML schema (`kdforge.config`) becomes the plain settings each layer takes: one function per
section. The engine, data, models, teachers and methods never read the schema; a new schema field reaches them
only through here (tests/test_settings.py checks that every field is carried and the defaults agree)."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from kdforge.config.schema import (
    AugmentConfig, DataConfig, InfoDropConfig, MethodConfig, ModelConfig, OptimConfig, RecipeConfig, ScheduleConfig,
    StrictModel, TeacherCacheConfig, TrainConfig,
)
from kdforge.data import AugmentSettings, DataSettings, LabelBudget
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe, ScheduleSettings
from kdforge.methods import MethodSpec
from kdforge.models import InfoDropLayer, InfoDropSettings, ModelSpec
from kdforge.teachers.cache import CacheSettings

T = TypeVar("T")


def _carry(section: StrictModel, cls: type[T], **converted: Any) -> T:
    """`cls` from the fields of `section` of the same names, with `converted` ones given."""
    return cls(**{f.name: converted[f.name] if f.name in converted else getattr(section, f.name)
                  for f in fields(cls)})  # type: ignore[arg-type]


def optim(c: OptimConfig) -> OptimSettings:
    return _carry(c, OptimSettings, betas=tuple(c.betas))


def schedule(c: ScheduleConfig) -> ScheduleSettings:
    return _carry(c, ScheduleSettings, milestones=tuple(c.milestones))


def loop(c: TrainConfig) -> LoopSettings:
    return _carry(c, LoopSettings)


def recipe(c: RecipeConfig) -> Recipe:
    return Recipe(seed=c.seed, optim=optim(c.optim), schedule=schedule(c.schedule), train=loop(c.train))


def augment(c: AugmentConfig) -> AugmentSettings:
    return _carry(c, AugmentSettings)


def data(c: DataConfig) -> DataSettings:
    """`val_fraction` is carried only when the config gives it: a data set with its own validation split refuses
    an explicit one."""
    budget = None if c.label_budget is None else LabelBudget(c.label_budget.labeled, c.label_budget.seed)
    return _carry(c, DataSettings, augment=augment(c.augment), label_budget=budget, params=dict(c.params),
                  val_fraction=c.val_fraction if "val_fraction" in c.model_fields_set else None)


def infodrop(c: InfoDropConfig) -> InfoDropSettings:
    return _carry(c, InfoDropSettings, layers=tuple(InfoDropLayer(x.conv, x.output) for x in c.layers))


def model(c: ModelConfig) -> ModelSpec:
    return ModelSpec(c.name, dict(c.params), None if c.infodrop is None else infodrop(c.infodrop))


def method(c: MethodConfig) -> MethodSpec:
    return MethodSpec(c.name, dict(c.params))


def cache(c: TeacherCacheConfig) -> CacheSettings:
    return _carry(c, CacheSettings)
