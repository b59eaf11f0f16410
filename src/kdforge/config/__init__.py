"""The YAML schema of an experiment and its loading with overrides. It imports no registry: the API checks the
names a config gives (`kdforge.load_config`)."""
from kdforge.config.load import apply_overrides, dump_config, load_config, parse_config
from kdforge.config.schema import (
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RecipeConfig,
    ScheduleConfig,
    TeacherCacheConfig,
    TeacherConfig,
    TrainConfig,
)

__all__ = [
    "AugmentConfig", "DataConfig", "ExperimentConfig", "MethodConfig", "ModelConfig", "OptimConfig",
    "RecipeConfig", "ScheduleConfig", "TeacherCacheConfig", "TeacherConfig", "TrainConfig",
    "apply_overrides", "dump_config", "load_config", "parse_config",
]
