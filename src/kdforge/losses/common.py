"""Shared pieces of losses, written once: where a loss's values live (`Positions`: the class dim, the positions,
the mask, the reduction), temperature softmax, KL, soft and hard cross-entropy for logits, and the spatial matching
of feature maps that AT and NST share.

The layout rule of every logit-level loss in kdforge.losses:
- classes are on the LAST dim by default (`dim=None`): [B, C] (dim 1, as always), language-model logits [B, L, V],
  any [*, C]; `dim=` names another class dim (e.g. `dim=1` for segmentation logits [B, C, H, W]);
- every other index is a position and counts as one sample: the mean is over all positions (B * L for [B, L, V]);
- `mask=` (bool, the positions' shape, True = counted) leaves positions out: the result equals the loss on the kept
  positions alone; the dropped ones are never computed, so padding may hold anything (even NaN logits);
- an all-False mask gives 0 for "mean" and "sum" (no tokens, nothing to learn: a zero with a zero gradient, as TRL's
  generalized_jsd_loss does at f2cd577), not NaN;
- `reduction`: "mean" (default for losses), "sum", or "none" (per-position values in the positions' shape, 0 where
  the mask drops a position).
For [B, C] without a mask every loss computes exactly what it computed before the rule existed (bit for bit).
Nothing here multiplies by T^2: the losses that do say so.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
Scalar = TypeVar("Scalar", Tensor, float, int)


def class_dim(logits: Tensor, dim: int | None = None) -> int:
    """The class dim of `logits` as a non-negative index: the last one unless `dim` names another."""
    if logits.dim() < 2:
        raise ValueError(f"logits need a class dim and at least one position dim, got shape {tuple(logits.shape)}")
    d = logits.dim() - 1 if dim is None else dim
    if not -logits.dim() <= d < logits.dim():
        raise ValueError(f"dim={dim} is outside logits of shape {tuple(logits.shape)}")
    return d % logits.dim()


class Positions:
    """The positions of a logits tensor (every index but the class dim), the mask over them, and the reduction.

    `rows(x)` gives a tensor of the logits' layout as the kept rows [n, C] (class dim moved last, positions
    flattened, masked positions dropped); `values(x)` the same for a per-position tensor (labels, weights) [n];
    `reduce(v, reduction)` turns the n per-row values back into "mean", "sum" or per-position "none".
    """

    def __init__(self, logits: Tensor, dim: int | None = None, mask: Tensor | None = None,
                 loss: str = "loss") -> None:
        self.loss = loss
        self.dim = class_dim(logits, dim)
        self.logits_shape = logits.shape
        self.shape = logits.shape[: self.dim] + logits.shape[self.dim + 1:]
        self.keep = None if mask is None else self._flat_mask(mask)

    def _flat_mask(self, mask: Tensor) -> Tensor:
        if mask.dtype != torch.bool or mask.shape != self.shape:
            raise ValueError(f"{self.loss}: mask must be bool of the positions' shape {tuple(self.shape)} (the logits "
                             f"{tuple(self.logits_shape)} without the class dim {self.dim}), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        return mask.reshape(-1)

    def rows(self, x: Tensor) -> Tensor:
        """`x` (the logits' shape) as kept rows [n, C]; on [B, C] without a mask, `x` itself."""
        if x.shape != self.logits_shape:
            raise ValueError(f"{self.loss}: expected a tensor of the logits' shape {tuple(self.logits_shape)}, got "
                             f"{tuple(x.shape)} (student and teacher logits and label distributions must match)")
        rows = x.movedim(self.dim, -1).reshape(-1, x.shape[self.dim])
        return rows if self.keep is None else rows[self.keep]

    def values(self, x: Tensor) -> Tensor:
        """A per-position tensor (the positions' shape) as kept values [n]."""
        if x.shape != self.shape:
            raise ValueError(f"{self.loss}: expected a per-position tensor of shape {tuple(self.shape)}, got "
                             f"{tuple(x.shape)}")
        flat = x.reshape(-1)
        return flat if self.keep is None else flat[self.keep]

    def per_position(self, x: Scalar) -> Scalar:
        """A number (or 0-d tensor) as it is, a per-position tensor as kept values [n]."""
        return self.values(x) if isinstance(x, Tensor) and x.dim() > 0 else x

    def targets(self, labels: Tensor) -> Tensor:
        """Labels as kept rows: a float distribution of the logits' shape -> [n, C], class indices -> [n]."""
        if labels.is_floating_point() and labels.shape == self.logits_shape:
            return self.rows(labels)
        return self.values(labels)

    def reduce(self, values: Tensor, reduction: Reduction) -> Tensor:
        """Per-row values [n] reduced: mean (0 when no row is kept), sum, or "none" in the positions' shape."""
        check_reduction(reduction, self.loss)
        if reduction == "mean":
            return values.mean() if values.numel() else values.sum()
        if reduction == "sum":
            return values.sum()
        if self.keep is None:
            return values.reshape(self.shape)
        return values.new_zeros(self.keep.shape).masked_scatter(self.keep, values).reshape(self.shape)

    def reduce_native(self, compute: Callable[[str], Tensor], reduction: Reduction) -> Tensor:
        """`compute(r)` is a torch loss on the kept rows with torch's reduction r: its own "mean"/"sum" where rows
        are kept (what the loss always did on [B, C]; F.cross_entropy's mean also leaves ignore_index labels out),
        `reduce` for "none" and for no kept row."""
        check_reduction(reduction, self.loss)
        if reduction == "none" or (self.keep is not None and not bool(self.keep.any())):
            return self.reduce(compute("none"), reduction)
        return compute(reduction)


def check_reduction(reduction: str, loss: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{loss}: reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}")


def positional(kernel: Callable[[Tensor, Tensor], Tensor], student_logits: Tensor, teacher_logits: Tensor,
               reduction: Reduction, mask: Tensor | None, dim: int | None, loss: str) -> Tensor:
    """A two-logits row kernel ([n, C], [n, C] -> [n]) applied under the layout rule and reduced."""
    pos = Positions(student_logits, dim, mask, loss)
    return pos.reduce(kernel(pos.rows(student_logits), pos.rows(teacher_logits)), reduction)


def at_least_fp32(x: Tensor) -> Tensor:
    """`x` in fp32 when it is in a half type (bf16/fp16 under autocast), else unchanged (fp32 and fp64 stay)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def soft_targets(logits: Tensor, temperature: float, dim: int | None = None) -> Tensor:
    """Temperature-softened distribution softmax(z/T) over the class dim (last by default; Hinton et al. 2015,
    Eq. 1), in the logits' layout."""
    return F.softmax(at_least_fp32(logits) / temperature, dim=class_dim(logits, dim))  # fp32: see kl_rows


def kl_rows(student_rows: Tensor, teacher_rows: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) of each row of [n, C] rows, [n]: the kernel of every KL loss here."""
    # Both sides through log_softmax (log_target=True) so a very peaked teacher gives no log(0).
    # In fp32 even under autocast (train.precision bf16/fp16; a no-op on fp32 logits): autocast runs log_softmax
    # in fp32 but the division by T before it in the logits' dtype, and the KL of two close distributions is a
    # small difference of log-probabilities that bf16's 8-bit mantissa (and fp16's range, at T^2 scale) would swamp.
    log_p_student = F.log_softmax(at_least_fp32(student_rows) / temperature, dim=1)
    log_p_teacher = F.log_softmax(at_least_fp32(teacher_rows) / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=1)


def kl_div_with_temperature(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                            reduction: Literal["none", "batchmean", "mean", "sum"] = "none", *,
                            mask: Tensor | None = None, dim: int | None = None) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) per position (default "none": [B] for [B, C], [B, L] for [B, L, V]), or
    reduced ("batchmean" is "mean", kept for old callers); no T^2 factor. Gradients reach both arguments, so
    kl_div_with_temperature(t, s, T) is the reverse KL(softmax(s/T) || softmax(t/T)).
    Layout, mask and reduction: the rule in this module's docstring."""
    return positional(partial(kl_rows, temperature=temperature), student_logits, teacher_logits,
                      "mean" if reduction == "batchmean" else reduction, mask, dim, "kl_div_with_temperature")


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                       reduction: Reduction = "none", *, mask: Tensor | None = None,
                       dim: int | None = None) -> Tensor:
    """CE of the student at T against the teacher's soft label, -sum_c p_t,c log p_s,c, per position by default.

    Equals KL(p_t || p_s) + H(p_t): same gradient in the student, larger value by the teacher's entropy.
    Layout, mask and reduction: the rule in this module's docstring."""
    def rows(s: Tensor, t: Tensor) -> Tensor:
        return -(soft_targets(t, temperature) * F.log_softmax(at_least_fp32(s) / temperature, dim=1)).sum(dim=1)

    return positional(rows, student_logits, teacher_logits, reduction, mask, dim, "soft_cross_entropy")


def hard_cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, reduction: Reduction = "mean",
                       *, mask: Tensor | None = None, dim: int | None = None) -> Tensor:
    """CE against int64 class indices (the positions' shape: [B] for [B, C], [B, L] for [B, L, V]) or a float label
    distribution of the logits' shape (mixup/cutmix targets); F.cross_entropy on the kept rows.

    Layout, mask and reduction: the rule in this module's docstring. Note the default class dim of rank >= 3
    inputs is the last one, where F.cross_entropy takes dim 1: pass `dim=1` for [B, C, H, W]. Index labels equal to
    -100 (F.cross_entropy's ignore_index, Hugging Face's padding label) are left out of the mean as F.cross_entropy
    does (0 under "none"); `mask` is the explicit way.
    """
    pos = Positions(logits, dim, mask, "hard_cross_entropy")
    rows, targets = pos.rows(logits), pos.targets(labels)
    return pos.reduce_native(
        lambda r: F.cross_entropy(rows, targets, label_smoothing=label_smoothing, reduction=r), reduction)


def pool_to_common_size(student_feature: Tensor, teacher_feature: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """Feature maps [B, C, L] or [B, C, H, W] of one batch (channel counts may differ), each spatial dim of the
    larger map adaptive-average-pooled to the smaller's, as RepDistiller's `Attention.at_loss` and
    `NSTLoss.nst_loss` do before comparing maps; a ValueError naming `loss` for other shapes.

    The official code compares heights only and pools to a square (t_H, t_H); here each dim is pooled to the
    smaller of the two sizes, which is the same on the square maps the official code handles.
    """
    s, t = student_feature, teacher_feature
    if s.dim() not in (3, 4) or s.dim() != t.dim() or s.shape[0] != t.shape[0]:
        raise ValueError(f"{loss}: needs student and teacher feature maps [B, C, L] or [B, C, H, W] of one rank and "
                         f"batch; got {tuple(s.shape)} and {tuple(t.shape)}")
    size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:]))
    pool = F.adaptive_avg_pool1d if s.dim() == 3 else F.adaptive_avg_pool2d
    if tuple(s.shape[2:]) != size:
        s = pool(s, size)
    if tuple(t.shape[2:]) != size:
        t = pool(t, size)
    return s, t
