"""Load an experiment: YAML (safe_load only) + `a.b=value` overrides -> validated, frozen ExperimentConfig."""
from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdforge.config.schema import ExperimentConfig
from kdforge.options import describe_errors
from kdforge.errors import ConfigError


# The params a method accepts (None: not a registered method): the API's registry knowledge, given to the schema's
# loading, which imports no registry, to keep what a switched-to method shares with the old one.
ParamsOf = Callable[[str], Collection[str] | None]


def load_config(path: str | Path, overrides: Iterable[str] = (), notes: list[str] | None = None,
                params_of: ParamsOf | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply overrides, validate it against the schema (see `parse_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); give the experiment's YAML file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror}); check the path and its permissions") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data, student, method, ...)")
    return parse_config(data, overrides, notes, params_of)


def parse_config(data: Mapping[str, Any], overrides: Iterable[str] = (), notes: list[str] | None = None,
                 params_of: ParamsOf | None = None) -> ExperimentConfig:
    """The schema's validation of `data` with overrides applied. Registered names (data set, models, method,
    teacher source) are checked by the API (`kdforge.load_config`, `kdforge.api.parse_config`), not here: the
    schema imports no registry. Notes on what the overrides changed besides their keys go to `notes`, or to
    stderr without it; `params_of` see `_switch_method`."""
    overrides, told = list(overrides), [] if notes is None else notes
    data = apply_overrides(_switch_method(dict(data), overrides, told, params_of), overrides)
    if notes is None:
        for line in told:
            print(line, file=sys.stderr)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, ExperimentConfig)) from None
    return cfg


def _switch_method(data: dict[str, Any], overrides: list[str], notes: list[str],
                   params_of: ParamsOf | None) -> dict[str, Any]:
    """`method.name=X` naming another method than the file's drops the file's method.params that X does not take
    (all of them without `params_of`), with a one-line note, instead of refusing them as X's; params given by
    override apply as usual."""
    method = data.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("params"), dict) or not method["params"]:
        return data
    names = [raw for key, eq, raw in (o.partition("=") for o in overrides) if eq and key.strip() == "method.name"]
    whole = any(o.partition("=")[0].strip() in ("method", "method.params") for o in overrides)
    new, old = (names[-1].strip() if names else None), str(method.get("name", "ce"))
    if new is None or whole or new == old:
        return data
    accepted = params_of(new) if params_of is not None else ()
    if accepted is None:  # not a registered method: its own error comes later
        return data
    kept = {k: v for k, v in method["params"].items() if k in accepted}
    dropped = [str(k) for k in method["params"] if k not in kept]
    if dropped:
        notes.append(f"note: method.name={new} replaces {old}: {old}'s params {', '.join(dropped)} are dropped"
                     f"{' (kept: ' + ', '.join(map(str, kept)) + ')' if kept else ''}; set {new}'s with "
                     "method.params.KEY=VALUE")
    return {**data, "method": {**method, "params": kept}}


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings; values are parsed as YAML scalars/lists (`3`, `true`, `[1, 2]`, `null`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_path(data, key.split("."), value, item)
    return data


def _set_path(data: dict[str, Any], keys: list[str], value: Any, item: str) -> None:
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(keys[: depth + 1])} is not a section")
        else:
            child = node[key] = dict(child)  # copy so the caller's mapping is untouched
        node = child
    node[keys[-1]] = value


def format_validation_error(err: ValidationError, root: type[BaseModel]) -> str:
    """One line per problem: the key path, what is wrong, and for unknown keys the allowed ones."""
    unknown = [e for e in err.errors() if e["type"] == "extra_forbidden"]
    if unknown:  # the most common mistake: a typo'd key; show what is allowed there
        loc = unknown[0]["loc"]
        allowed = _allowed_keys(root, loc[:-1])
        return f"{'.'.join(map(str, loc))}: unknown key; allowed: {', '.join(allowed)}"
    return describe_errors(err)


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return sorted(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The BaseModel class inside an annotation such as `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
