"""Informative Dropout (InfoDrop; Shi et al., "Informative Dropout for Robust Representation Learning: A
Shape-bias Perspective", ICML 2020), attached to any conv layer of any model by module path.

A patch's self-information is I(p) = -log p̂(p), with p̂ a kernel density estimate of how likely the patch is given
its neighbours (paper Sec. 3.1-3.2): for n offsets (i, j) drawn from [-r, r]^2,
    D_ij(p) = sum over the conv's receptive field at p and over input channels of (x(q) - x(q + (i, j)))^2,
    p̂(p)   = 1/n sum_ij exp(-D_ij(p) / mean(D) / (2 h^2)).
Repetitive texture gives small distances, a likely patch and little information; InfoDrop drops the conv's
output at such places: positions are drawn with probability proportional to p̂^(1/T) = exp(-I/T) (paper Eq. 6),
int(drop_rate * H * W) of them with replacement per sample and channel, and zeroed (no rescaling).

As the official `Info_Dropout` (bfshi/InfoDrop@0dc1b24, domain_generalization/models/resnet.py:36-113):
distances on the conv's input zero-padded like the conv, summed by an all-ones window with the conv's kernel,
stride and dilation; normalised by their global mean; the probability min-pooled by a following max-pool's window
when the masked output comes after one; offsets drawn anew each forward from the global torch RNG. The official
protocol (README, `finetune_wo_infodrop` at resnet.py:34) trains 100 epochs with InfoDrop, then 20 more without
it from those weights, with a new optimizer at the same lr 1e-3 (train_jigsaw.py:64-73, StepLR at int(0.8 *
epochs), optimizer/optimizer_helper.py:9-12): `model.infodrop.finetune_epochs` runs that second run as the last
epochs of one run (`finetune_phase`). Defaults are the domain-generalization ones (drop_rate 1.5, T 0.03,
resnet.py:47-52; the few-shot code uses 0.1 and 0.5, few_shot/backbone.py:125-126).
Deviations:
- nothing in eval mode: the official `forward` has no `self.training` check (resnet.py:79-81), so its
  per-epoch evaluation in phase 1 (train_jigsaw.py:133-145) runs with random drops; here validation is always
  deterministic, a teacher's outputs (KD targets, caches) are too, and the protocol's final model, evaluated
  after the fine-tune without InfoDrop, is evaluated the same way in both. With finetune_epochs 0 a model
  trained with drops is evaluated without them, which the official protocol never does.
- the fine-tune phase is the tail of one run (one folder and checkpoint series, train.epochs + finetune_epochs
  epochs), not a second invocation: its lr is the recipe's schedule compressed to the phase, which for a decay
  at a fixed share of the epochs (the official StepLR at int(0.8 * epochs)) is the official second run's.
- scoring is not restricted to groups=1 convs (the distances sum over all input channels either way).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.utils.hooks import RemovableHandle

from kdforge.config.schema import InfoDropConfig, RecipeConfig
from kdforge.engine.optim import lr_factor
from kdforge.errors import ConfigError

if TYPE_CHECKING:
    from kdforge.engine.contract import Optimization, Plan, StepContext
    from kdforge.engine.trainer import Trainer


def patch_distances(x: Tensor, conv: nn.Conv2d, offsets: Sequence[tuple[int, int]]) -> Tensor:
    """D [B, n, H', W']: for each offset, the squared difference of the input with its shifted self, summed over
    channels and over the conv's window at each of its output positions."""
    pad_h, pad_w = _pair(conv.padding)
    r = max(max(abs(i), abs(j)) for i, j in offsets)
    padded = F.pad(x, (pad_w + r, pad_w + r, pad_h + r, pad_h + r))
    h, w = x.shape[-2] + 2 * pad_h, x.shape[-1] + 2 * pad_w
    centre = padded[..., r:r + h, r:r + w]
    diffs = [(centre - padded[..., r + i:r + i + h, r + j:r + j + w]).pow(2).sum(1) for i, j in offsets]
    d = torch.stack(diffs, 1)  # [B, n, h, w]
    n = len(offsets)
    ones = torch.ones(n, 1, *_pair(conv.kernel_size), dtype=x.dtype, device=x.device)
    return F.conv2d(d, ones, stride=conv.stride, dilation=conv.dilation, groups=n)


def patch_likelihood(x: Tensor, conv: nn.Conv2d, offsets: Sequence[tuple[int, int]], bandwidth: float = 1.0) -> Tensor:
    """p̂ [B, 1, H', W'], the kernel density estimate of each output position's input patch (in (0, 1])."""
    d = patch_distances(x, conv, offsets)
    return torch.exp(-d / d.mean().clamp_min(torch.finfo(d.dtype).tiny) / (2 * bandwidth**2)).mean(1, keepdim=True)


def self_information(x: Tensor, conv: nn.Conv2d, offsets: Sequence[tuple[int, int]], bandwidth: float = 1.0) -> Tensor:
    """I = -log p̂ [B, 1, H', W']: high where a patch is unlike its neighbours (edges, shapes), low in texture."""
    return -patch_likelihood(x, conv, offsets, bandwidth).log()


def drop_probability(likelihood: Tensor, temperature: float, pool: nn.MaxPool2d | None = None) -> Tensor:
    """P [B, 1, H, W] ∝ p̂^(1/T) = exp(-I/T), summing to 1 per sample; min-pooled by `pool`'s window first when
    the masked output comes after that max-pool. Computed as a softmax of log p̂ / T: the official
    p̂^(1/T) / sum underflows to 0/0 when every p̂ of a map is small (T = 0.03 raises them to the 33rd power)."""
    logits = likelihood.log() / temperature
    if pool is not None:
        logits = -F.max_pool2d(-logits, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    b, _, h, w = logits.shape
    return logits.reshape(b, 1, h * w).softmax(-1).view(b, 1, h, w)


def drop_mask(prob: Tensor, channels: int, drop_rate: float, generator: torch.Generator | None = None) -> Tensor:
    """[B, C, H, W] ones with zeros at int(drop_rate * H * W) positions per (sample, channel), drawn with
    replacement from `prob` [B, 1, H, W] (a distribution per sample; the same map for every channel)."""
    b, _, h, w = prob.shape
    flat = prob.reshape(b, 1, h * w).expand(b, channels, h * w)
    picks = torch.multinomial(flat.reshape(b * channels, h * w) + 1e-8, int(drop_rate * h * w), replacement=True,
                              generator=generator)
    mask = torch.ones(b * channels, h * w, dtype=prob.dtype, device=prob.device)
    mask.scatter_(1, picks, 0.0)
    return mask.view(b, channels, h, w)


class InfoDrop:
    """Hooks that apply InfoDrop to one layer: the conv's input is kept, the `output` module's output masked."""

    def __init__(self, model: nn.Module, conv_path: str, output_path: str | None, cfg: InfoDropConfig) -> None:
        self.conv = _module(model, conv_path, "conv")
        if not isinstance(self.conv, nn.Conv2d):
            raise ConfigError(f"model.infodrop.layers.conv: {conv_path!r} is a {type(self.conv).__name__}, not a Conv2d")
        self.output = self.conv if output_path is None else _module(model, output_path, "output")
        self.cfg = cfg
        self.active: Callable[[], bool] = _always  # the fine-tune phase turns it off (`finetune_phase`)
        self._input: Tensor | None = None
        self.handles: list[RemovableHandle] = [
            self.conv.register_forward_pre_hook(self._keep_input),
            self.output.register_forward_hook(self._mask),
        ]

    def _keep_input(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self._input = inputs[0].detach() if module.training and self.active() else None

    @torch.no_grad()
    def _mask(self, module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        if not self.conv.training or self._input is None:
            return out
        x, self._input = self._input, None
        r = self.cfg.radius
        offsets = list(zip(torch.randint(-r, r + 1, (self.cfg.samples,)).tolist(),
                           torch.randint(-r, r + 1, (self.cfg.samples,)).tolist()))
        pool = self.output if isinstance(self.output, nn.MaxPool2d) else None
        prob = drop_probability(patch_likelihood(x, self.conv, offsets, self.cfg.bandwidth), self.cfg.temperature, pool)
        if prob.shape[-2:] != out.shape[-2:]:
            raise ConfigError(f"model.infodrop: the masked output is {tuple(out.shape[-2:])} but the conv's positions "
                              f"are {tuple(prob.shape[-2:])}; mask the conv, its BN/ReLU, or a max-pool right after it")
        return out * drop_mask(prob, out.shape[1], self.cfg.drop_rate)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def attach(model: nn.Module, cfg: InfoDropConfig) -> list[InfoDrop]:
    """InfoDrop on every layer `cfg` names; the model keeps them in `model._infodrop` (no parameters or buffers:
    its state dict does not change)."""
    drops = [InfoDrop(model, layer.conv, layer.output, cfg) for layer in cfg.layers]
    model._infodrop = drops  # type: ignore[assignment]  # kept alive with the model
    return drops


# ---- the fine-tune phase without InfoDrop ------------------------------------------------------------------
def finetune_recipe(recipe: RecipeConfig, cfg: InfoDropConfig | None) -> RecipeConfig:
    """`recipe` with `cfg.finetune_epochs` more epochs: what the Trainer of a model with InfoDrop runs."""
    if cfg is None or cfg.finetune_epochs == 0:
        return recipe
    train = recipe.train.model_copy(update={"epochs": recipe.train.epochs + cfg.finetune_epochs})
    return recipe.model_copy(update={"train": train})


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


def _always() -> bool:
    return True


def _module(model: nn.Module, path: str, key: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise ConfigError(f"model.infodrop.layers.{key}: no module {path!r} (modules: {', '.join(names[:20])}"
                          f"{', …' if len(names) > 20 else ''})") from None


def _pair(v: int | tuple[int, ...] | str) -> tuple[int, int]:
    if isinstance(v, str):
        raise ConfigError(f"model.infodrop: convs with padding={v!r} are not supported; use numeric padding")
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
