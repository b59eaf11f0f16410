"""Turn `method:` of a config into a Distiller: name lookup, params validation, teacher check, one-line errors."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from kdforge.config.options import validate_options
from kdforge.distillers.base import Distiller, MethodParams
from kdforge.errors import ConfigError
from kdforge.registry import METHODS
from kdforge.teachers.live import TeacherSource

if TYPE_CHECKING:  # kdforge.config imports this package lazily; a runtime import here could close a cycle
    from kdforge.config.schema import MethodConfig


def validate_params(cfg: MethodConfig) -> MethodParams:
    """Check `method.name` and `method.params` before any work; raise ConfigError naming the key path."""
    method: type[Distiller] = METHODS.lookup(cfg.name, "method.name")
    return validate_options(method.Params, cfg.params, "method.params", f"method {cfg.name!r}")


def check_teacher(cfg: MethodConfig, has_teacher: bool) -> None:
    """Raise ConfigError when the method distills from a teacher and the config gives none."""
    method: type[Distiller] = METHODS.lookup(cfg.name, "method.name")
    if method.needs_teacher and not has_teacher:
        raise ConfigError(f"method {cfg.name!r} needs a teacher: add a teacher section (checkpoint or recipe)")


def build(
    cfg: MethodConfig,
    student: nn.Module,
    teacher: TeacherSource | None,
    label_smoothing: float = 0.0,
) -> Distiller:
    """The configured method around `student` (and `teacher`), with validated params."""
    params = validate_params(cfg)
    check_teacher(cfg, teacher is not None)
    method: type[Distiller] = METHODS[cfg.name]
    return method(student, teacher, params, label_smoothing=label_smoothing)
