"""Distillation losses: pure functions of tensors, no state, no modules. Each docstring cites its paper."""
from kdforge.losses.common import (
    hard_cross_entropy,
    kl_div_with_temperature,
    soft_cross_entropy,
    soft_targets,
)
from kdforge.losses.fitnet import hint_loss
from kdforge.losses.kd import kd_loss
from kdforge.losses.wsl import wsl_loss, wsl_weights

__all__ = [
    "hard_cross_entropy",
    "hint_loss",
    "kd_loss",
    "kl_div_with_temperature",
    "soft_cross_entropy",
    "soft_targets",
    "wsl_loss",
    "wsl_weights",
]
