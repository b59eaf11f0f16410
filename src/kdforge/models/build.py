"""Build a model from its spec: check the name and params against the registered builder, then call it."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from torch import nn

from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError
from kdforge.models.infodrop import InfoDropSettings
from kdforge.options import signature_model, validate_options
from kdforge.registry import MODELS


#: the spec each model `build` made was built from: a run of `kdforge.distill` on such a model can save it as a
#: folder `load_model` rebuilds (a caller's own module has none); weak, so models are not kept alive by it
_BUILT: "WeakKeyDictionary[nn.Module, ModelSpec]" = WeakKeyDictionary()


@dataclass(frozen=True)
class ModelSpec:
    """Which model: a registered builder's `name`, its keyword `params`, and InfoDrop on some convs (or None).
    Saved as model.json's "model" (`to_json`), so a saved model can be rebuilt."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    infodrop: InfoDropSettings | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params),
                "infodrop": None if self.infodrop is None else self.infodrop.to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ModelSpec":
        """The spec `to_json` wrote; a KeyError, TypeError or ValueError when it is not one."""
        unknown = set(d) - {"name", "params", "infodrop"}
        if unknown or not isinstance(d.get("name"), str) or not isinstance(d.get("params", {}), dict):
            raise ValueError(f"not a model spec (keys {sorted(d)})")
        infodrop = d.get("infodrop")
        return cls(d["name"], dict(d.get("params", {})),
                   None if infodrop is None else InfoDropSettings.from_json(infodrop))


def check(cfg: ModelSpec, key_path: str = "model") -> dict[str, Any]:
    """Validate `cfg.name` and `cfg.params` (strictly, against the builder's signature); return the params.

    Errors are ConfigErrors naming `{key_path}.name` or `{key_path}.params.<key>` and the allowed values.
    """
    builder = MODELS.lookup(cfg.name, f"{key_path}.name")
    options = validate_options(signature_model(builder), cfg.params, f"{key_path}.params", f"model {cfg.name!r}")
    return {key: getattr(options, key) for key in cfg.params}


def build(cfg: ModelSpec, spec: DataSpec, key_path: str = "model") -> nn.Module:
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
    _BUILT[model] = cfg
    return model


def built_from(model: nn.Module) -> ModelSpec | None:
    """The spec `build` made `model` from; None for a module built any other way (a caller's own class)."""
    return _BUILT.get(model)
