"""Batch augmentation on tensors. Every random choice is drawn first into a params dict, then applied.

Keeping drawing apart from applying makes a view replayable: `replay(x, params)` is the very code that made
the batch, so it rebuilds the batch bit for bit from the raw samples (a teacher-output cache relies on this).
All randomness comes from the `torch.Generator` passed to `draw`.

Keys of `params` (each present only when its op ran on the batch):
  "crop_shift"  int64 [B, 2]  (dy, dx) per sample: out[..., r, c] = in[..., r + dy, c + dx], zero outside. This
                              is the standard random crop of the image zero-padded by p, at offset (p+dy, p+dx).
  "flip"        bool  [B]     samples mirrored left-right (after the crop).
  "mix_perm"    int64 [B]     each sample's mixing partner, as a position in the batch.
  "mix_lam"     float32 []    weight of the sample itself, in [0, 1]; for cutmix, 1 - (box area / image area).
  "mix_box"     int64 [4]     cutmix only: (top, left, bottom, right), half-open; pixels inside come from the partner.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.config.schema import AugmentConfig
from kdforge.errors import ConfigError

_IMAGE_ONLY = ("crop_padding", "flip", "cutmix_alpha")


def validate(augment: AugmentConfig, input_shape: tuple[int, ...], name: str) -> None:
    """Refuse image-only ops on inputs that are not images ([C, H, W] per sample) before any training starts."""
    if len(input_shape) == 3:
        return
    for key in _IMAGE_ONLY:
        if getattr(augment, key):
            raise ConfigError(
                f"data.augment.{key} applies to images; {name} inputs have shape {input_shape} "
                f"({len(input_shape)}-D), so leave data.augment.{key} off"
            )


def require_off(augment: AugmentConfig, what: str) -> None:
    """Refuse every augmentation op on data that is not float tensors (token ids, graphs)."""
    for key, value in augment.model_dump().items():
        if key != "mix_prob" and value:
            raise ConfigError(f"data.augment.{key} applies to float tensors; {what} data cannot be augmented, "
                              f"so leave data.augment.{key} off")


def augment(
    x: Tensor, y: Tensor | None, cfg: AugmentConfig, num_classes: int, gen: torch.Generator
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Draw params for this batch and apply them: (augmented x, mixed target or None, params)."""
    params = draw(cfg, x.shape, gen)
    return replay(x, params), mixed_target(y, params, num_classes), params


def draw(cfg: AugmentConfig, shape: tuple[int, ...], gen: torch.Generator) -> dict[str, Tensor]:
    """All random choices for a batch of `shape`, in a fixed order from `gen`."""
    batch = shape[0]
    params: dict[str, Tensor] = {}
    if cfg.crop_padding:
        pad = cfg.crop_padding
        params["crop_shift"] = torch.randint(-pad, pad + 1, (batch, 2), generator=gen)
    if cfg.flip:
        params["flip"] = torch.rand(batch, generator=gen) < 0.5
    mixing = [(mode, a) for mode, a in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if a > 0]
    if mixing and float(torch.rand((), generator=gen)) < cfg.mix_prob:
        # With both on, each mixed batch uses one of them, chosen with equal odds (timm's Mixup, switch_prob 0.5).
        mode, alpha = mixing[int(torch.randint(len(mixing), (1,), generator=gen))]
        params["mix_perm"] = torch.randperm(batch, generator=gen)
        lam = _beta(alpha, gen)
        if mode == "cutmix":
            params["mix_box"], lam = _cutmix_box(lam, shape[-2], shape[-1], gen)
        params["mix_lam"] = torch.tensor(lam, dtype=torch.float32)
    return params


def replay(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    """Apply stored params to the raw samples `x` (same order as when drawn); bit-identical to `augment`."""
    if "crop_shift" in params:
        x = shift(x, params["crop_shift"])
    if "flip" in params:
        x = flip(x, params["flip"])
    if "mix_perm" in params:
        x = mix(x, params)
    return x


def mixed_target(y: Tensor | None, params: dict[str, Tensor], num_classes: int) -> Tensor | None:
    """lam * onehot(y) + (1 - lam) * onehot(y[perm]) as float [B, C], or None when the batch was not mixed
    (or has no labels: a mixed unlabeled view is still a valid input for a teacher)."""
    if "mix_perm" not in params or y is None:
        return None
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    lam = params["mix_lam"]
    return lam * onehot + (1 - lam) * onehot[params["mix_perm"]]


def shift(x: Tensor, offsets: Tensor) -> Tensor:
    """Translate each image [B, C, H, W] by its own (dy, dx), filling with zeros, in one gather (no Python loop)."""
    b, c, h, w = x.shape
    pad = int(offsets.abs().max())
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h) + pad + offsets[:, :1]  # [B, H]: source row of each output row
    cols = torch.arange(w) + pad + offsets[:, 1:]  # [B, W]
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, flat).view(b, c, h, w)


def flip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror left-right the images where `mask` is True."""
    return torch.where(mask.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)


def mix(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    """Mixup (blend with the partner) or, when a box is given, cutmix (paste the partner's box)."""
    perm = params["mix_perm"]
    if "mix_box" not in params:
        lam = params["mix_lam"]
        return lam * x + (1 - lam) * x[perm]
    top, left, bottom, right = params["mix_box"].tolist()
    out = x.clone()
    out[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    return out


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw. torch has no public Beta sampler that takes a generator; numpy's is seeded from it."""
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _cutmix_box(lam: float, h: int, w: int, gen: torch.Generator) -> tuple[Tensor, float]:
    """A box covering about 1 - lam of the image, centred uniformly and clipped at the border (as in the CutMix
    paper); lam is then recomputed from the clipped box, so the target matches the pixels actually pasted."""
    cut = math.sqrt(1 - lam)
    half_h, half_w = int(h * cut) // 2, int(w * cut) // 2
    cy, cx = int(torch.randint(h, (), generator=gen)), int(torch.randint(w, (), generator=gen))
    top, bottom = max(cy - half_h, 0), min(cy + half_h, h)
    left, right = max(cx - half_w, 0), min(cx + half_w, w)
    area = (bottom - top) * (right - left)
    return torch.tensor([top, left, bottom, right]), 1 - area / (h * w)
