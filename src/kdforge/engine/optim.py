"""Optimizers and per-step learning-rate schedules (warm-up + constant/step/multistep/cosine, and onecycle)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR

from kdforge.engine.settings import OptimSettings, ScheduleSettings


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimSettings) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: ScheduleSettings, base_lr: float, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based); schedules are defined in epochs."""
    epoch = step / steps_per_epoch
    if cfg.name == "onecycle":
        return onecycle_factor(step, epochs * steps_per_epoch, cfg.pct_start, cfg.div_factor, cfg.final_div_factor)
    warmup = cfg.warmup_epochs
    if warmup and epoch < warmup:
        return min(1.0, (step + 1) / (warmup * steps_per_epoch))
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(int(epoch) >= m for m in cfg.milestones)
    progress = (epoch - warmup) / max(epochs - warmup, 1e-12)
    floor = cfg.min_lr / base_lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def onecycle_factor(step: int, total: int, pct_start: float, div: float, final_div: float) -> float:
    """lr / max_lr of torch.optim.lr_scheduler.OneCycleLR (anneal_strategy "cos", three_phase False) at `step`:
    cosine from 1/div up to 1 until step pct_start * total - 1, then cosine down to 1/(div * final_div) at
    step total - 1 (the same phase boundaries as torch's, so the two agree step by step)."""
    start, low = 1.0 / div, 1.0 / (div * final_div)
    rise_end = float(pct_start * total) - 1
    if step <= rise_end:  # (a rise shorter than one step, rise_end < 0, is skipped)
        return _cos(start, 1.0, step / rise_end)
    return _cos(1.0, low, min((step - rise_end) / (total - 1 - rise_end), 1.0))  # holds after the last step


def _cos(begin: float, end: float, pct: float) -> float:
    return end + (begin - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleSettings, epochs: int, steps_per_epoch: int
) -> LambdaLR:
    base_lr = optimizer.param_groups[0]["lr"]
    fn = partial(lr_factor, cfg=cfg, base_lr=base_lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return LambdaLR(optimizer, fn)
