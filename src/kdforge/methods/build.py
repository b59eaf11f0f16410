"""Turn a method's name and params into a Method: name lookup, params validation, teacher check, one-line errors."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from kdforge.data.types import DataBundle
from kdforge.errors import ConfigError
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.options import validate_options
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


@dataclass(frozen=True)
class MethodSpec:
    """Which method: a registered name and its params (validated against the method's `Params`)."""

    name: str = "ce"
    params: Mapping[str, Any] = field(default_factory=dict)


def validate_params(spec: MethodSpec) -> MethodParams:
    """`spec.name` looked up and `spec.params` validated (once per distinct params: validate_options caches);
    a ConfigError names the key path (`method.name`, `method.params.<key>`)."""
    method: type[Method] = METHODS.lookup(spec.name, "method.name")
    return validate_options(method.Params, spec.params, "method.params", f"method {spec.name!r}")


def check_teacher(spec: MethodSpec, has_teacher: bool) -> None:
    """Raise ConfigError when the method distills from a teacher and none is given."""
    method: type[Method] = METHODS.lookup(spec.name, "method.name")
    if method.needs_teacher and not has_teacher:
        raise ConfigError(f"method {spec.name!r} needs a teacher: add a teacher section (checkpoint or recipe)")


def check_data(spec: MethodSpec, data: DataBundle) -> None:
    """The method's own check of the data (`Method.check_data`), before anything is trained."""
    method: type[Method] = METHODS.lookup(spec.name, "method.name")
    method.check_data(validate_params(spec), data)


def build(spec: MethodSpec, student: nn.Module, teacher: TeacherSource | None, setup: Setup) -> Method:
    """The method `spec` names around `student` (and `teacher`), with validated params."""
    params = validate_params(spec)
    check_teacher(spec, teacher is not None)
    return METHODS[spec.name](student, teacher, params, setup)
