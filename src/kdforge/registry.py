"""Registries: one dict per kind of pluggable thing, filled by a decorator. A config names only keys of these."""
from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches
from typing import Any, TypeVar

from kdforge.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, Any]):
    """A plain dict from name to object, with a `register` decorator and errors that list the allowed names."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = obj
            return obj

        return decorator

    def name_of(self, obj: Any) -> str:
        """The name `obj` was registered under (its class name when it was not registered)."""
        return next((name for name, entry in self.items() if entry is obj), getattr(obj, "__name__", str(obj)))

    def lookup(self, name: str, key_path: str | None = None) -> Any:
        """Return the entry for `name`, or raise a ConfigError naming `key_path` and the allowed values."""
        if name in self:
            return self[name]
        where = f"{key_path}: " if key_path else ""
        hint = get_close_matches(name, list(self), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{where}unknown {self.kind} {name!r}{suggestion}; allowed: {', '.join(sorted(self))}"
        )


MODELS = Registry("model")
DATASETS = Registry("dataset")
METHODS = Registry("method")
TEACHERS = Registry("teacher source")
