"""Distillation methods: thin Distiller modules registered in METHODS; importing this package registers them."""
from kdforge.distillers import ce, kd, wsl  # noqa: F401  (registration side effect)
from kdforge.distillers.base import Distiller, MethodParams
from kdforge.distillers.build import build, check_teacher, validate_params
from kdforge.registry import METHODS

__all__ = ["METHODS", "Distiller", "MethodParams", "build", "check_teacher", "validate_params"]
