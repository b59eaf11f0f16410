"""Optimizers (optionally with no weight decay on norms and biases) and per-step learning-rate schedules
(warm-up + constant/step/multistep/cosine/linear, and onecycle)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from kdforge.engine.settings import OptimSettings, ScheduleSettings


def build_optimizer(params: nn.Module | Iterable[nn.Parameter], cfg: OptimSettings) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable ones of `params` (a module's parameters, or the parameters given).
    With `cfg.no_decay_norm_bias`, two param groups: weight decay as set, and 0 on the no-decay ones (see
    `no_decay_parameters`)."""
    no_decay = no_decay_parameters(params) if getattr(cfg, "no_decay_norm_bias", False) else None
    params = [p for p in (params.parameters() if isinstance(params, nn.Module) else params) if p.requires_grad]
    groups: list[torch.nn.Parameter] | list[dict] = params
    if no_decay is not None:
        split = ([p for p in params if id(p) not in no_decay], [p for p in params if id(p) in no_decay])
        groups = [g for g in ({"params": split[0]}, {"params": split[1], "weight_decay": 0.0}) if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


_TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def no_decay_parameters(params: nn.Module | Iterable[nn.Parameter]) -> set[int]:
    """ids of the parameters that get no weight decay: in a module, every parameter of a normalisation layer
    (torch's BatchNorm/InstanceNorm/LayerNorm/GroupNorm/SyncBatchNorm, and any class named `...Norm`, as
    Hugging Face's `LlamaRMSNorm`) and every parameter named `bias`. Decaying these pulls a norm's scale toward 0
    and shifts biases for no regularising gain (the BERT/timm recipe). Bare parameters carry no layer, so there
    the rule is by shape: every parameter with at most one dimension (biases and norm scales are the 1-D ones)."""
    if not isinstance(params, nn.Module):
        return {id(p) for p in params if p.dim() <= 1}
    ids: set[int] = set()
    for module in params.modules():
        norm = isinstance(module, _TORCH_NORMS) or type(module).__name__.endswith("Norm")
        ids.update(id(p) for name, p in module.named_parameters(recurse=False) if norm or name == "bias")
    return ids


def lr_factor(step: int, cfg: ScheduleSettings, base_lr: float, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based); schedules are defined in epochs, the warm-up
    in epochs or (`warmup_steps`) in optimizer steps."""
    epoch = step / steps_per_epoch
    if cfg.name == "onecycle":
        return onecycle_factor(step, epochs * steps_per_epoch, cfg.pct_start, cfg.div_factor, cfg.final_div_factor)
    w_steps = getattr(cfg, "warmup_steps", 0)
    warmup = w_steps / steps_per_epoch if w_steps else cfg.warmup_epochs
    if w_steps and step < w_steps:
        return (step + 1) / w_steps
    if warmup and not w_steps and epoch < warmup:
        return min(1.0, (step + 1) / (warmup * steps_per_epoch))
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(int(epoch) >= m for m in cfg.milestones)
    floor = cfg.min_lr / base_lr
    if cfg.name == "linear":  # after the warm-up, straight down to min_lr at the end of the last step
        w, total = (w_steps or warmup * steps_per_epoch), epochs * steps_per_epoch
        return floor + (1 - floor) * max(0.0, (total - step) / max(total - w, 1e-12))
    progress = (epoch - warmup) / max(epochs - warmup, 1e-12)
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
