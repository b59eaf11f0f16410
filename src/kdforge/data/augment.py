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

The loader builds a drawn batch with `replay` and hands its params on in a per-sample form (`per_sample`), in which
every row describes its own view with no reference to the batch it was drawn in, so a process's share of a batch
can be recorded by a teacher-output cache and rebuilt later in any batch composition (`replay_samples`), each
sample in the same view:
  "crop_shift" [B, 2], "flip" [B]          as above;
  "mix_partner" int64 [B]                 the partner's position in the split (not in the batch);
  "partner_crop_shift" [B, 2], "partner_flip" [B]   the partner's own crop and flip (its view is mixed in);
  "mix_lam" float32 [B], "mix_box" int64 [B, 4]     per row (the same for every row of a drawn batch);
  "mix_cut" bool [B]                      only when rows come from mixup and cutmix batches: True for cutmix.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ConfigError

_IMAGE_ONLY = ("crop_padding", "flip", "cutmix_alpha")


@dataclass(frozen=True)
class AugmentSettings:
    """Batch augmentation (the YAML's `data.augment`, whose schema validates the ranges; the defaults are its):
    random crop after zero padding, horizontal flip, mixup / cutmix with Beta(a, a) (a = 0: off), applied to a
    batch with probability `mix_prob` when mixing is on."""

    crop_padding: int = 0
    flip: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0

    def __post_init__(self) -> None:  # 1 and 1.0 are one setting: a teacher cache's key records them as floats
        for name in ("mixup_alpha", "cutmix_alpha", "mix_prob"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def on(self) -> bool:
        return self != AugmentSettings()

    def to_json(self) -> dict[str, int | bool | float]:
        return asdict(self)


def validate(augment: AugmentSettings, input_shape: tuple[int, ...], name: str) -> None:
    """Refuse image-only ops on inputs that are not images ([C, H, W] per sample) before any training starts."""
    if len(input_shape) == 3:
        return
    for key in _IMAGE_ONLY:
        if getattr(augment, key):
            raise ConfigError(
                f"data.augment.{key} applies to images; {name} inputs have shape {input_shape} "
                f"({len(input_shape)}-D), so leave data.augment.{key} off"
            )


def require_off(augment: AugmentSettings, what: str) -> None:
    """Refuse every augmentation op on data that is not float tensors (token ids, graphs)."""
    for key, value in asdict(augment).items():
        if key != "mix_prob" and value:
            raise ConfigError(f"data.augment.{key} applies to float tensors; {what} data cannot be augmented, "
                              f"so leave data.augment.{key} off")


def augment(
    x: Tensor, y: Tensor | None, cfg: AugmentSettings, num_classes: int, gen: torch.Generator
) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
    """Draw params for this batch and apply them: (augmented x, mixed target or None, params)."""
    params = draw(cfg, x.shape, gen)
    return replay(x, params), mixed_target(y, params, num_classes), params


def draw(cfg: AugmentSettings, shape: tuple[int, ...], gen: torch.Generator) -> dict[str, Tensor]:
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


# ---- per-sample views -------------------------------------------------------------------------------------------
PER_SAMPLE_KEYS = ("crop_shift", "flip", "mix_partner", "partner_crop_shift", "partner_flip", "mix_lam", "mix_box")


def per_sample(params: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """Batch-drawn `params` of the samples at split positions `index`, rewritten one row per sample."""
    out = {k: params[k] for k in ("crop_shift", "flip") if k in params}
    if "mix_perm" in params:
        perm, n = params["mix_perm"], len(index)
        out["mix_partner"] = index[perm]
        for key in ("crop_shift", "flip"):
            if key in params:
                out[f"partner_{key}"] = params[key][perm]
        out["mix_lam"] = params["mix_lam"].expand(n).clone()
        if "mix_box" in params:
            out["mix_box"] = params["mix_box"].expand(n, 4).clone()
    return out


def rows_of(params: dict[str, Tensor], rows: Tensor | slice) -> dict[str, Tensor]:
    """The per-sample params of some rows (a process's shard of a batch)."""
    return {k: v[rows] for k, v in params.items()}


def replay_samples(source: Tensor, index: Tensor, params: dict[str, Tensor]) -> Tensor:
    """The views of the samples at `index` of `source` (the whole split's raw inputs), from per-sample params;
    bit-identical to `replay` on the batch they were drawn in, whatever the batch they are now part of."""
    x = _own_view(source.index_select(0, index), params.get("crop_shift"), params.get("flip"))
    if "mix_partner" not in params:
        return x
    partner = _own_view(source.index_select(0, params["mix_partner"]), params.get("partner_crop_shift"),
                        params.get("partner_flip"))
    lam = params["mix_lam"].view(-1, *([1] * (x.ndim - 1)))
    if "mix_box" not in params:
        return lam * x + (1 - lam) * partner
    boxed = torch.where(box_mask(params["mix_box"], x.shape[-2], x.shape[-1]), partner, x)
    if "mix_cut" not in params:
        return boxed
    # Rows recorded from batches of both kinds (mixup and cutmix on, a teacher cache): each row its own kind.
    return torch.where(params["mix_cut"].view(-1, *([1] * (x.ndim - 1))), boxed, lam * x + (1 - lam) * partner)


def mixed_target_samples(labels: Tensor | None, index_y: Tensor | None, params: dict[str, Tensor],
                         num_classes: int) -> Tensor | None:
    """Per-sample `mixed_target`: `labels` are the whole split's labels, `index_y` the batch's own."""
    if "mix_partner" not in params or labels is None or index_y is None:
        return None
    lam = params["mix_lam"].view(-1, 1)
    own = F.one_hot(index_y, num_classes).to(torch.float32)
    return lam * own + (1 - lam) * F.one_hot(labels.index_select(0, params["mix_partner"]), num_classes).to(torch.float32)


def box_mask(boxes: Tensor, h: int, w: int) -> Tensor:
    """[B, 1, H, W] True inside each row's (top, left, bottom, right) box."""
    rows, cols = torch.arange(h), torch.arange(w)
    inside_r = (rows >= boxes[:, :1]) & (rows < boxes[:, 2:3])  # [B, H]
    inside_c = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 3:4])  # [B, W]
    return (inside_r[:, :, None] & inside_c[:, None, :])[:, None]


def _own_view(x: Tensor, crop: Tensor | None, flips: Tensor | None) -> Tensor:
    if crop is not None:
        x = shift(x, crop)
    if flips is not None:
        x = flip(x, flips)
    return x
