"""The one translation from the YAML schema to each layer's settings (kdforge.api.settings): every schema field
reaches its settings, the defaults of the two agree, and the translated values are the schema's."""
from dataclasses import fields

import pytest

from kdforge.api import settings
from kdforge.config.schema import (
    AugmentConfig, DataConfig, InfoDropConfig, LabelBudget, MethodConfig, ModelConfig, OptimConfig, RecipeConfig,
    ScheduleConfig, TeacherCacheConfig, TrainConfig,
)
from kdforge.data import AugmentSettings, DataSettings
from kdforge.data.settings import DEFAULT_VAL_FRACTION
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe, ScheduleSettings
from kdforge.errors import ConfigError
from kdforge.models import InfoDropSettings
from kdforge.teachers.cache import CacheSettings

INFODROP = InfoDropConfig(layers=[{"conv": "features.0", "output": "features.3"}])
PAIRS = [  # (schema section, its settings class, the translation, schema fields the layer does not take)
    (OptimConfig(), OptimSettings, settings.optim, set()),
    (ScheduleConfig(), ScheduleSettings, settings.schedule, set()),
    (TrainConfig(), LoopSettings, settings.loop, set()),
    (AugmentConfig(), AugmentSettings, settings.augment, set()),
    (TeacherCacheConfig(), CacheSettings, settings.cache, set()),
    (INFODROP, InfoDropSettings, settings.infodrop, set()),
    # batch sizes and evaluation settings are the loader's and the API's, not the data set's
    (DataConfig(name="digits"), DataSettings, settings.data, {"batch_size", "eval_batch_size", "eval_corruptions"}),
]


@pytest.mark.parametrize("section, cls, translate, elsewhere", PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_every_schema_field_reaches_its_settings_with_the_same_default(section, cls, translate, elsewhere):
    names = {f.name for f in fields(cls)}
    assert set(type(section).model_fields) - elsewhere == names
    translated = translate(section)
    for name in names:
        value = getattr(translated, name)
        given = getattr(section, name)
        if name == "val_fraction":  # carried only when the config sets it; the default lives in both places
            assert value is None and given == DEFAULT_VAL_FRACTION
        elif name in ("layers", "augment", "label_budget", "params"):
            continue  # nested: checked below
        else:
            assert value == (tuple(given) if isinstance(given, list) else given), name
    defaults = {f.name: f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
                for f in fields(cls) if f.name not in ("name", "layers", "val_fraction")}
    for name, default in defaults.items():
        assert getattr(translated, name) == default, name  # the schema's defaults are the settings' defaults


def test_a_recipe_and_a_whole_data_section_translate_with_nested_parts():
    recipe = settings.recipe(RecipeConfig(seed=3, optim=OptimConfig(name="adamw", lr=1e-3),
                                          schedule=ScheduleConfig(name="multistep", milestones=[2, 4]),
                                          train=TrainConfig(epochs=7, grad_clip=1.0)))
    assert recipe == Recipe(3, OptimSettings(name="adamw", lr=1e-3), ScheduleSettings(name="multistep", milestones=(2, 4)),
                            LoopSettings(epochs=7, grad_clip=1.0))
    assert settings.recipe(RecipeConfig()) == Recipe()
    data = settings.data(DataConfig(name="digits", val_fraction=0.3, augment=AugmentConfig(flip=True, mixup_alpha=1),
                                    label_budget=LabelBudget(labeled=95, seed=2), params={"a": 1}))
    assert data.val_fraction == 0.3 and data.augment == AugmentSettings(flip=True, mixup_alpha=1.0)
    assert data.label_budget is not None and (data.label_budget.labeled, data.label_budget.seed) == (95.0, 2)
    assert dict(data.params) == {"a": 1}


def test_model_and_method_specs_keep_the_saved_format():
    cfg = ModelConfig(name="cnn", params={"channels": [8, 16]}, infodrop=INFODROP)
    assert settings.model(cfg).to_json() == cfg.model_dump(mode="json")  # model.json's "model" is unchanged
    assert settings.model(ModelConfig(name="mlp")).to_json() == ModelConfig(name="mlp").model_dump(mode="json")
    spec = settings.method(MethodConfig(name="kd", params={"temperature": 2}))
    assert (spec.name, dict(spec.params)) == ("kd", {"temperature": 2})


def test_settings_refuse_unknown_optimizer_and_schedule_names_in_one_line():
    with pytest.raises(ConfigError, match=r"^optim\.name: 'adm' is not one of sgd, adam, adamw$"):
        OptimSettings(name="adm")
    with pytest.raises(ConfigError, match=r"^schedule\.name: 'exponential' is not one of"):
        ScheduleSettings(name="exponential")
