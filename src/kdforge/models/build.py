"""Build a model from its config: check the name and params against the registered builder, then call it."""
from __future__ import annotations

from typing import Any

from torch import nn

from kdforge.options import signature_model, validate_options
from kdforge.config.schema import ModelConfig
from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError
from kdforge.registry import MODELS


def check(cfg: ModelConfig, key_path: str = "model") -> dict[str, Any]:
    """Validate `cfg.name` and `cfg.params` (strictly, against the builder's signature); return the params.

    Errors are ConfigErrors naming `{key_path}.name` or `{key_path}.params.<key>` and the allowed values.
    """
    builder = MODELS.lookup(cfg.name, f"{key_path}.name")
    options = validate_options(signature_model(builder), cfg.params, f"{key_path}.params", f"model {cfg.name!r}")
    return {key: getattr(options, key) for key in cfg.params}


def build(cfg: ModelConfig, spec: DataSpec, key_path: str = "model") -> nn.Module:
    """The model `cfg` names, built for `spec`'s input shape and class count (freshly initialized, train mode)."""
    params = check(cfg, key_path)
    try:
        model = MODELS[cfg.name](spec, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{key_path}: model {cfg.name!r} with params {cfg.params} cannot be built for data {spec.name!r}: {e}"
        ) from e
    if cfg.infodrop is not None:
        from kdforge.models.infodrop import attach

        try:
            attach(model, cfg.infodrop)
        except ConfigError as e:
            raise ConfigError(f"{key_path}.{str(e).removeprefix('model.')}") from None
    return model
