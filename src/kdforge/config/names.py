"""Check every name a config gives against the registries, and each component's params, before any work."""
from __future__ import annotations

from kdforge.config.schema import ExperimentConfig
from kdforge.errors import ConfigError


def check_names(cfg: ExperimentConfig) -> None:
    import kdforge.data as data
    import kdforge.distillers as distillers
    import kdforge.models as models

    data.DATASETS.lookup(cfg.data.name, "data.name")
    models.check(cfg.student, "student")
    if cfg.teacher is not None:
        models.check(cfg.teacher.model, "teacher.model")
    method = distillers.METHODS.lookup(cfg.method.name, "method.name")
    distillers.validate_params(cfg.method)
    if method.needs_teacher and cfg.teacher is None:
        raise ConfigError(
            f"method.name: method {cfg.method.name!r} needs a teacher: add a teacher section (checkpoint or recipe)"
        )
