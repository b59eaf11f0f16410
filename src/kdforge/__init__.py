"""kdforge: knowledge distillation, every method really implemented.

The public API is loaded on first use, so `import kdforge.losses` (or any other submodule) pulls in nothing else.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "distill": "kdforge.api", "run": "kdforge.api", "load_config": "kdforge.api",
    "load_model": "kdforge.models", "save_model": "kdforge.models",
    "OptimConfig": "kdforge.config", "ScheduleConfig": "kdforge.config", "AugmentConfig": "kdforge.config",
    "TeacherCacheConfig": "kdforge.config", "build_teacher_cache": "kdforge.api", "FitResult": "kdforge.engine",
}
_SUBPACKAGES = {"api", "config", "data", "engine", "losses", "methods", "models", "teachers"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return import_module(f"kdforge.{name}")
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
