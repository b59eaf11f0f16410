"""Turn `method:` of a config into a Distiller: name lookup, params validation, teacher check, one-line errors."""
from __future__ import annotations

from difflib import get_close_matches
from typing import TYPE_CHECKING

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from torch import nn

from kdforge.distillers.base import Distiller, MethodParams
from kdforge.errors import ConfigError
from kdforge.registry import METHODS
from kdforge.teachers.live import TeacherSource

if TYPE_CHECKING:  # kdforge.config imports this package lazily; a runtime import here could close a cycle
    from kdforge.config.schema import MethodConfig


def validate_params(cfg: MethodConfig) -> MethodParams:
    """Check `method.name` and `method.params` before any work; raise ConfigError naming the key path."""
    method: type[Distiller] = METHODS.lookup(cfg.name, "method.name")
    try:
        return method.Params.model_validate(cfg.params)
    except ValidationError as exc:
        problems = "; ".join(_describe(err, cfg.name, method.Params) for err in exc.errors())
        raise ConfigError(problems) from None


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


def _describe(err: ErrorDetails, method_name: str, params_cls: type[MethodParams]) -> str:
    key = ".".join(str(part) for part in err["loc"])
    where = f"method.params.{key}" if key else "method.params"
    if err["type"] == "extra_forbidden":
        names = list(params_cls.model_fields)
        hint = get_close_matches(key, names, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        allowed = ", ".join(names) or "none"
        return f"{where}: unknown parameter of method {method_name!r}{suggestion}; allowed: {allowed}"
    return f"{where}: {err['msg']} (got {err['input']!r})"
