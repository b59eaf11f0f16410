"""Validate the `params` of a registered component (model, method, data set) with one-line errors: a utility every
layer may use (it is not the YAML schema, which lives in `kdforge.config`).

Every component declares its options as a pydantic model; this is the one place that turns a bad key or
value into a ConfigError naming the key path and, for unknown keys, the allowed ones.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from difflib import get_close_matches
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from kdforge.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def validate_options(model: type[M], params: Mapping[str, Any], key_path: str, owner: str) -> M:
    """`model` validated from `params`; `key_path` is e.g. "method.params", `owner` e.g. "method 'kd'".

    A config is checked when it is loaded and its components are built later from the same params: the result
    is kept per (model, params), so each distinct set of params is validated once per process.
    """
    try:
        key = (model, key_path, owner, json.dumps(dict(params), sort_keys=True, default=repr))
    except TypeError:  # keys that are not strings: let validation report them
        return _validate(model, params, key_path, owner)
    if key not in _VALIDATED:
        _VALIDATED[key] = _validate(model, params, key_path, owner)
    return _VALIDATED[key]  # type: ignore[return-value]


_VALIDATED: dict[tuple[Any, ...], BaseModel] = {}


def _validate(model: type[M], params: Mapping[str, Any], key_path: str, owner: str) -> M:
    allowed = list(model.model_fields)
    for key in params:
        if key not in allowed:
            hint = get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{key_path}.{key}: unknown parameter of {owner}{suggestion}; "
                              f"allowed: {', '.join(allowed) or 'none'}")
    try:
        return model.model_validate(dict(params))
    except ValidationError as err:
        raise ConfigError(describe_errors(err, key_path)) from None


def describe_errors(err: ValidationError, key_path: str = "") -> str:
    """One `path: message (got value)` clause per problem, joined by '; '."""
    clauses = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        path = ".".join(p for p in (key_path, loc) if p) or "config"
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or e["type"] == "missing" else f" (got {got!r})"
        message = e["msg"].removeprefix("Value error, ")  # pydantic's wording for a validator's ValueError
        clauses.append(f"{path}: {message}{shown}")
    return "; ".join(clauses)


@cache
def signature_model(fn: Callable[..., Any], skip: int = 1) -> type[BaseModel]:
    """A strict pydantic model of `fn`'s keyword parameters after the first `skip` (annotations and defaults)."""
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(fn, eval_str=True)
    for name, p in list(inspect.signature(fn).parameters.items())[skip:]:
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[name] = (hints.get(name, Any), default)
    return create_model(f"{getattr(fn, '__name__', 'builder')}_params",
                        __config__=ConfigDict(extra="forbid", strict=True), **fields)


def load_yaml_model(path: str | Path, model: type[M], what: str, where: str, holds: str) -> M:
    """The YAML mapping in `path` validated as `model` (its `key` defaults to the file's stem): one ConfigError line
    naming the file for a missing file (`where` says where such files live), bad YAML, a non-mapping (`holds`
    names its main keys) or a bad key. Plans, sweeps and drivers are read through this one function."""
    import yaml  # here, not at the top: the engine imports this module and loads no YAML

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; {where}")
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping with {holds}")
    raw.setdefault("key", path.stem)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{what} {path}: {describe_errors(e, '')}") from None
