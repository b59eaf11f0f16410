"""Build a model from its config: check the name and params against the registered builder, then call it."""
from __future__ import annotations

import inspect
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError
from torch import nn

from kdforge.config.schema import ModelConfig
from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError
from kdforge.registry import MODELS


def check(cfg: ModelConfig, key_path: str = "model") -> dict[str, Any]:
    """Validate `cfg.name` and each of `cfg.params` (strictly, against the builder's annotations); return the params.

    Errors are ConfigErrors naming `{key_path}.name` or `{key_path}.params.<key>` and the allowed values.
    """
    builder = MODELS.lookup(cfg.name, f"{key_path}.name")
    allowed = _params_of(builder)
    hints = get_type_hints(builder, include_extras=True)
    params = {}
    for key, value in cfg.params.items():
        where = f"{key_path}.params.{key}"
        if key not in allowed:
            listed = ", ".join(allowed) or "none"
            raise ConfigError(f"{where}: unknown parameter of model {cfg.name!r}; allowed: {listed}")
        try:
            params[key] = TypeAdapter(hints.get(key, Any)).validate_python(value, strict=True)
        except ValidationError as e:
            raise ConfigError(f"{where}: invalid value {value!r} for model {cfg.name!r}: {_reasons(e)}") from e
    return params


def build(cfg: ModelConfig, spec: DataSpec, key_path: str = "model") -> nn.Module:
    """The model `cfg` names, built for `spec`'s input shape and class count (freshly initialized, train mode)."""
    params = check(cfg, key_path)
    try:
        return MODELS[cfg.name](spec, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{key_path}: model {cfg.name!r} with params {cfg.params} cannot be built for data {spec.name!r}: {e}"
        ) from e


def _params_of(builder: Any) -> list[str]:
    """The builder's keyword parameters: every parameter after the leading `spec`."""
    return list(inspect.signature(builder).parameters)[1:]


def _reasons(error: ValidationError) -> str:
    def one(err: Any) -> str:
        where = "".join(f"[{part}]" for part in err["loc"])
        return f"{where} {err['msg']}".strip().lower()

    return "; ".join(one(err) for err in error.errors())
