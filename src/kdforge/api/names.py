"""A config's names and params checked against the registries before any work, and the public `load_config` /
`parse_config`: the YAML schema's (kdforge.config, which imports no registry) followed by that check."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kdforge import config
from kdforge.config.schema import ExperimentConfig
from kdforge.options import validate_options


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply overrides, validate everything (names included) before any work."""
    notes: list[str] = []
    return _told(check_names(config.load_config(path, overrides, notes, _method_params)), notes)


def parse_config(data: Mapping[str, Any], overrides: Iterable[str] = ()) -> ExperimentConfig:
    """`load_config` for a mapping already read."""
    notes: list[str] = []
    return _told(check_names(config.parse_config(data, overrides, notes, _method_params)), notes)


def _method_params(name: str) -> list[str] | None:
    """The params method `name` takes; None when no method has that name."""
    import kdforge.methods  # noqa: F401  (registers the methods)
    from kdforge.registry import METHODS

    return list(METHODS[name].Params.model_fields) if name in METHODS else None


def _told(cfg: ExperimentConfig, notes: list[str]) -> ExperimentConfig:
    """The loading's notes (a method switched by override) on stderr, once the config is known to be valid."""
    for line in notes:
        print(line, file=sys.stderr)
    return cfg


def check_names(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg`, once every registered name it gives and each component's params are known to be valid."""
    import kdforge.data as data
    import kdforge.methods as methods
    import kdforge.models as models
    import kdforge.teachers  # noqa: F401  (registers the teacher sources)
    from kdforge.api import settings
    from kdforge.registry import TEACHERS

    source = data.DATASETS.lookup(cfg.data.name, "data.name")
    validate_options(source.params_model, cfg.data.params, "data.params", f"data set {cfg.data.name!r}")
    models.check(settings.model(cfg.student), "student")
    if cfg.teacher is not None:
        models.check(settings.model(cfg.teacher.model), "teacher.model")
        TEACHERS.lookup(cfg.teacher.source, "teacher.source")
    methods.validate_params(settings.method(cfg.method))
    methods.check_teacher(settings.method(cfg.method), cfg.teacher is not None)
    return cfg
