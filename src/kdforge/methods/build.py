"""Turn `method:` of a config into a Method: name lookup, params validation, teacher check, one-line errors."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from kdforge.options import validate_options
from kdforge.data.types import DataBundle
from kdforge.errors import ConfigError
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource

if TYPE_CHECKING:  # kdforge.config imports this package lazily; a runtime import here could close a cycle
    from kdforge.config.schema import MethodConfig


def validate_params(cfg: MethodConfig) -> MethodParams:
    """`method.name` looked up and `method.params` validated (once per distinct params: validate_options caches);
    a ConfigError names the key path."""
    method: type[Method] = METHODS.lookup(cfg.name, "method.name")
    return validate_options(method.Params, cfg.params, "method.params", f"method {cfg.name!r}")


def check_teacher(cfg: MethodConfig, has_teacher: bool) -> None:
    """Raise ConfigError when the method distills from a teacher and the config gives none."""
    method: type[Method] = METHODS.lookup(cfg.name, "method.name")
    if method.needs_teacher and not has_teacher:
        raise ConfigError(f"method {cfg.name!r} needs a teacher: add a teacher section (checkpoint or recipe)")


def check_data(cfg: MethodConfig, data: DataBundle) -> None:
    """The method's own check of the data (`Method.check_data`), before anything is trained."""
    method: type[Method] = METHODS.lookup(cfg.name, "method.name")
    method.check_data(validate_params(cfg), data)


def build(cfg: MethodConfig, student: nn.Module, teacher: TeacherSource | None, setup: Setup) -> Method:
    """The configured method around `student` (and `teacher`), with validated params."""
    params = validate_params(cfg)
    check_teacher(cfg, teacher is not None)
    return METHODS[cfg.name](student, teacher, params, setup)
