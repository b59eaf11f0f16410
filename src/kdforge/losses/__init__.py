"""Distillation losses: pure functions of tensors, no state, no modules. Each docstring cites its paper."""
from kdforge.losses.common import (
    hard_cross_entropy,
    kl_div_with_temperature,
    soft_cross_entropy,
    soft_targets,
)
from kdforge.losses.crd import crd_nce_loss, crd_scores
from kdforge.losses.dkd import dkd_loss, dkd_terms
from kdforge.losses.fitnet import hint_loss
from kdforge.losses.kd import kd_loss
from kdforge.losses.vid import vid_log_scale_init, vid_nll, vid_variance
from kdforge.losses.wsl import wsl_loss, wsl_weights

__all__ = [
    "crd_nce_loss",
    "crd_scores",
    "dkd_loss",
    "dkd_terms",
    "hard_cross_entropy",
    "hint_loss",
    "kd_loss",
    "kl_div_with_temperature",
    "soft_cross_entropy",
    "soft_targets",
    "vid_log_scale_init",
    "vid_nll",
    "vid_variance",
    "wsl_loss",
    "wsl_weights",
]
