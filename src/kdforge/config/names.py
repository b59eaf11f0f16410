"""Check every name a config gives against the registries, and each component's params, before any work."""
from __future__ import annotations

from kdforge.config.schema import ExperimentConfig
from kdforge.options import validate_options


def check_names(cfg: ExperimentConfig) -> None:
    import kdforge.data as data
    import kdforge.methods as methods
    import kdforge.models as models
    import kdforge.teachers  # noqa: F401  (registers the teacher sources)
    from kdforge.registry import TEACHERS

    source = data.DATASETS.lookup(cfg.data.name, "data.name")
    validate_options(source.params_model, cfg.data.params, "data.params", f"data set {cfg.data.name!r}")
    models.check(cfg.student, "student")
    if cfg.teacher is not None:
        models.check(cfg.teacher.model, "teacher.model")
        TEACHERS.lookup(cfg.teacher.source, "teacher.source")
    methods.validate_params(cfg.method)
    methods.check_teacher(cfg.method, cfg.teacher is not None)
