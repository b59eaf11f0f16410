"""InfoDrop's fine-tune phase: where a model with InfoDrop (`kdforge.models.infodrop`) meets the trainer. The
official second run without InfoDrop (bfshi/InfoDrop README, `finetune_wo_infodrop`) runs as the last
`finetune_epochs` epochs of one run, its schedule restarted and compressed, its optimizer state fresh."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from kdforge.engine import Trainer
from kdforge.engine.contract import Optimization, Plan, StepContext
from kdforge.engine.optim import lr_factor
from kdforge.engine.settings import Recipe
from kdforge.errors import ConfigError
from kdforge.models.infodrop import InfoDrop


def finetune_recipe(recipe: Recipe, finetune_epochs: int) -> Recipe:
    """`recipe` with `finetune_epochs` more epochs: what the Trainer of a model with InfoDrop runs."""
    return recipe.with_epochs(recipe.train.epochs + finetune_epochs) if finetune_epochs else recipe


def finetune_phase(model: nn.Module, trainer: Trainer, key: str) -> None:
    """The official second run (bfshi/InfoDrop README: `finetune_wo_infodrop`, 20 epochs from the weights of
    100) as the last `finetune_epochs` epochs of `trainer`'s run (built with `finetune_recipe`), when `model` has
    InfoDrop with them:
    - InfoDrop is off from the phase's first step (S1 = train.epochs x steps per epoch) on;
    - phase 1 follows the recipe's schedule over train.epochs as without the phase; the fine-tune runs it again,
      compressed: its step s takes phase 1's factor at step s * S1 / S2, times `finetune_lr_factor` (the
      official StepLR at int(0.8 * epochs) decays at 80 % of both runs; so does a multistep decay here);
    - the optimizer state (momentum, Adam's moments) is cleared before step S1, as a new optimizer starts.
    All three follow from the global step, which checkpoints hold, so a run resumes exactly across S1."""
    drops: list[InfoDrop] = getattr(model, "_infodrop", [])
    if not drops or drops[0].cfg.finetune_epochs == 0:
        return
    cfg, plan = drops[0].cfg, trainer.plan
    if plan.accumulate > 1:  # its phase boundary and compressed schedule count one optimizer step per batch
        raise ConfigError(f"{key}.finetune_epochs does not combine with train.accumulate > 1; set one of them off")
    first = plan.epochs - cfg.finetune_epochs
    assert first >= 1, "build the Trainer with finetune_recipe(recipe, model.infodrop)"
    s1, s2 = first * plan.steps_per_epoch, cfg.finetune_epochs * plan.steps_per_epoch
    for drop in drops:
        drop.active = partial(_before, trainer.ctx, s1)
    for name, opt in trainer.optimizers.items():
        if not all(_over_the_run(f, plan) for f in getattr(opt.scheduler, "lr_lambdas", [None])):
            raise ConfigError(f"{key}.finetune_epochs: the method's optimizer {name!r} does not follow the recipe's "
                              "per-step schedule over the run, which the fine-tune phase restarts; set it to 0")
        _restart(opt, first, s1, s2, cfg.finetune_lr_factor)


def _restart(opt: Optimization, first_epochs: int, s1: int, s2: int, scale: float) -> None:
    """`opt`'s schedule in two phases (`two_phase_factor`), its lr set for the current step, and its state
    cleared before step `s1`."""
    sched = opt.scheduler
    assert isinstance(sched, LambdaLR)
    sched.lr_lambdas = [partial(two_phase_factor, first=partial(f, epochs=first_epochs), first_steps=s1,
                                finetune_steps=s2, scale=scale) for f in sched.lr_lambdas]
    for group, base, f in zip(opt.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * f(sched.last_epoch)
    sched._last_lr = [g["lr"] for g in opt.optimizer.param_groups]  # what get_last_lr() reports
    opt.optimizer.register_step_pre_hook(partial(_fresh_state_at, sched, s1))


def two_phase_factor(step: int, first: Callable[[float], float], first_steps: int, finetune_steps: int,
                     scale: float) -> float:
    """lr factor at optimizer step `step`: `first(step)` in phase 1, then `scale * first` at the same fraction of
    phase 1 as `step` is of the fine-tune phase."""
    if step < first_steps:
        return first(step)
    return scale * first((step - first_steps) * first_steps / finetune_steps)


def _over_the_run(fn: object, plan: Plan) -> bool:
    """`fn` is the recipe's schedule (engine.optim.lr_factor) over the run's epochs, one step per batch."""
    kw = getattr(fn, "keywords", {})
    return (getattr(fn, "func", None) is lr_factor and kw.get("epochs") == plan.epochs
            and kw.get("steps_per_epoch") == plan.steps_per_epoch)


def _before(ctx: StepContext, step: int) -> bool:
    return ctx.step < step


def _fresh_state_at(sched: LRScheduler, step: int, optimizer: torch.optim.Optimizer, *_: object) -> None:
    if sched.last_epoch == step:  # the scheduler has stepped once per optimizer step: this is step S1
        optimizer.state.clear()
