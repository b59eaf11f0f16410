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
epochs of one run (`kdforge.api.finetune.finetune_phase`, where the model meets the trainer). Defaults are the domain-generalization ones (drop_rate 1.5, T 0.03,
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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from kdforge.errors import ConfigError


@dataclass(frozen=True)
class InfoDropLayer:
    """`conv`: module path of a Conv2d whose input's patches are scored; `output`: the module whose output is
    masked (the conv's ReLU, or a max-pool after it), default the conv itself."""

    conv: str
    output: str | None = None


@dataclass(frozen=True)
class InfoDropSettings:
    """InfoDrop on some conv layers (the YAML's `model.infodrop`, whose schema validates ranges; the defaults are
    the official code's). `finetune_epochs` / `finetune_lr_factor`: the fine-tune phase without it."""

    layers: tuple[InfoDropLayer, ...]
    drop_rate: float = 1.5
    temperature: float = 0.03
    bandwidth: float = 1.0
    radius: int = 3
    samples: int = 9
    finetune_epochs: int = 0
    finetune_lr_factor: float = 1.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = [dict(layer) for layer in out["layers"]]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "InfoDropSettings":
        layers = tuple(InfoDropLayer(**layer) for layer in d["layers"])
        return cls(layers=layers, **{k: v for k, v in d.items() if k != "layers"})


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

    def __init__(self, model: nn.Module, conv_path: str, output_path: str | None, cfg: InfoDropSettings) -> None:
        self.conv = _module(model, conv_path, "conv")
        if not isinstance(self.conv, nn.Conv2d):
            raise ConfigError(f"model.infodrop.layers.conv: {conv_path!r} is a {type(self.conv).__name__}, not a Conv2d")
        self.output = self.conv if output_path is None else _module(model, output_path, "output")
        self.cfg = cfg
        self.active: Callable[[], bool] = _always  # the fine-tune phase turns it off (`kdforge.api.finetune`)
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


def attach(model: nn.Module, cfg: InfoDropSettings) -> list[InfoDrop]:
    """InfoDrop on every layer `cfg` names; the model keeps them in `model._infodrop` (no parameters or buffers:
    its state dict does not change)."""
    drops = [InfoDrop(model, layer.conv, layer.output, cfg) for layer in cfg.layers]
    model._infodrop = drops  # type: ignore[assignment]  # kept alive with the model
    return drops


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
