"""SLaM: Kontonis, Iliopoulos, Trinh, Baykal, Menghani & Vee, "SLaM: Student-Label Mixing for Distillation with
Unlabeled Examples", NeurIPS 2023 (arXiv 2302.03806). Official code: supplementary material only (not public).

The teacher's pseudo-label y_s(x) is modelled as the true label with probability α(x) and, otherwise, as one of the
other classes among the teacher's top k(x). The student f(x) is fitted through that noise model (a "forward
loss-adjustment"): it is trained against y_s(x) with its own prediction mixed as

    mix(f; α, k) = α(x) f(x) + (1 - α(x)) (1 - f(x)) ⊙ top(y_s(x); k(x)) / (k(x) - 1)      (Sec. 3, theory form)

where top(y; k) is the 0/1 mask of the k largest classes of y. Remark B.1: the experiments drop the 1/(k - 1)
("not normalizing ... resulted in better results overall"); `normalize=False` is that form.

What the paper says, as far as it could be read here (searched 2026-12-07; stored pages only: the reproducibility
summary https://ri.k117.org/papers/slam_studentlabel_mixing_for_distillation_with_unlabeled_examples__7a1718d1,
which quotes Remark B.1, an Algorithm 1, "we randomly split dataset C into a small (e.g., 500 examples)
validation dataset V and an unlabeled training dataset U" and the data sets CIFAR-10/100, CelebA, ImageNet and
IMDB; https://ar5iv.labs.arxiv.org/html/2302.03806 only as far as its introduction): the mixing above and its
un-normalised variant, a ~500-example validation set. NOT found, so our reading, unverified: how α(x) and k(x) are
estimated, the loss applied to mix, the target (soft or hard) in the experiments, and which baselines the paper
compares against (forward correction, our `forward_correction`, may not be one of them).

Our reading, stated once:
- the loss is the cross-entropy -sum_c y_c log mix_c (mix clamped away from 0 for the log) against a target y:
  `hard` = the one-hot of the teacher's top-1 (default), `soft_topk` = the teacher's softmax restricted to its top
  k and renormalised, `soft` = the full softmax (the old default, `hard_target: false`; the "soft pseudo-labels"
  of the abstract). With `soft` the classes outside the top k meet mix = α f there: -y_c log(α f_c) is an unbounded
  reward for moving mass out of the top k, so the per-example minimiser is not the teacher's distribution for any
  α < 1 and often not its top-1 (analysis/slam_minimizer.py measures it);
- α(x) is an isotonic (monotone non-decreasing) regression of "teacher's top-1 is right" on the teacher's margin
  (top-1 minus top-2 probability) or top-1 probability, fitted on labeled validation data by pool-adjacent-
  violators and read off by linear interpolation between the fitted points, clipped at the ends (scikit-learn's
  IsotonicRegression(out_of_bounds="clip") does the same);
- k(x) is one k for all x: the smallest k >= 2 whose validation top-k accuracy reaches a target (default 0.9);
- our addition, not in the paper: an α floor. On the mask mix_c = a f_c + b with a = α - (1 - α)/Z, b = (1 - α)/Z
  (Z = 1 un-normalised, k - 1 normalised): below α* = 1/(1 + Z) (1/2 un-normalised, 1/k normalised) a < 0 and the
  loss rewards moving mass AWAY from the teacher's top-1; the isotonic α reaches 0 in low-margin blocks. Raising
  α to α* makes those examples' loss flat in f on the mask (no gradient with a `hard` or `soft_topk` target): they
  are switched off instead of reversed.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.common import Positions, Reduction

SlamTarget = Literal["hard", "soft_topk", "soft"]


def top_k_mask(teacher_probs: Tensor, k: Tensor | int) -> Tensor:
    """top(y; k): 1.0 on each row's k largest entries, 0.0 elsewhere; `k` is an int or a per-row int tensor [B]."""
    classes = teacher_probs.shape[1]
    ranks = teacher_probs.argsort(dim=1, descending=True).argsort(dim=1)  # rank 0 = the row's largest entry
    k_rows = torch.as_tensor(k, device=teacher_probs.device).clamp(1, classes).reshape(-1, 1)
    return (ranks < k_rows).to(teacher_probs.dtype)


def slam_mix(student_probs: Tensor, alpha: Tensor, mask: Tensor, normalize: bool = False) -> Tensor:
    """mix(f; α, k) = α f + (1 - α)(1 - f) ⊙ mask, divided in its second term by (k - 1) when `normalize`
    (k = the mask's row sum). `alpha` is [B] (or a number), `student_probs` and `mask` [B, C]."""
    alpha = torch.as_tensor(alpha, dtype=student_probs.dtype, device=student_probs.device).reshape(-1, 1)
    z = (mask.sum(dim=1, keepdim=True) - 1).clamp_min(1) if normalize else torch.ones_like(alpha)
    # On the mask α f + (1 - α)(1 - f)/Z = a f + b, written with a = (α - α*)(1 + Z)/Z, α* = 1/(1 + Z), so that a
    # is exactly 0 at α = α* (floating point): an example raised to the floor has an exactly flat loss.
    slope = (alpha - 1 / (1 + z)) * (1 + z) / z
    return torch.where(mask.bool(), slope * student_probs + (1 - alpha) / z, alpha * student_probs)


def slam_target(teacher_probs: Tensor, mask: Tensor, target: SlamTarget) -> Tensor:
    """The distribution the mixed student is fitted to: the teacher's one-hot top-1 (`hard`), its softmax on its top
    k renormalised (`soft_topk`), or its whole softmax (`soft`)."""
    if target == "hard":
        return F.one_hot(teacher_probs.argmax(dim=1), teacher_probs.shape[1]).to(teacher_probs)
    if target == "soft_topk":
        kept = teacher_probs * mask
        return kept / kept.sum(dim=1, keepdim=True)
    if target == "soft":
        return teacher_probs
    raise ValueError(f"slam_target: target must be 'hard', 'soft_topk' or 'soft', not {target!r}")


def indifference_alpha(k: int, normalize: bool) -> float:
    """α* = 1 / (1 + Z): the α at which mix is the same on the mask whatever f is (Z = k - 1 normalised, else 1);
    below it the mixing rewards moving mass away from the teacher's top-1."""
    return 1.0 / k if normalize else 0.5


def resolve_alpha_floor(setting: Literal["auto", "none"] | float, k: int, normalize: bool) -> float | None:
    """The floor α is raised to: α* for "auto", none for "none", else the number given."""
    if setting == "auto":
        return indifference_alpha(k, normalize)
    return None if setting == "none" else float(setting)


def slam_loss(student_logits: Tensor, teacher_logits: Tensor, alpha: Tensor | float, k: Tensor | int,
              normalize: bool = False, target: SlamTarget = "hard", alpha_floor: float | None = None,
              eps: float = 1e-7, *, mask: Tensor | None = None, reduction: Reduction = "mean",
              dim: int | None = None) -> Tensor:
    """SLaM's unlabeled loss: mean over positions of -sum_c y_c log mix(f; max(α, alpha_floor), k)_c with
    f = softmax(student_logits), y = slam_target(softmax(teacher_logits), mask, target), mask = top(y_s; k).

    α = 1 (an always-right teacher) gives CE(y, f): plain distillation on y. α = α* (`indifference_alpha`) makes
    mix = (1 - α) / Z on the mask whatever f is: a target inside the mask (`hard`, `soft_topk`, or k = C) then gives
    no gradient, so the student's own labeled loss decides. Soft target mass outside the top k meets mix = α f there:
    plain distillation, weighted by α, with no counterweight inside the mask.
    Layout (losses.common's rule): classes on the last dim unless `dim`; `alpha` and a tensor `k` are a number or one
    value per position; `mask` keeps positions; `reduction` "mean" | "sum" | "none". The helpers below (top_k_mask,
    slam_mix, calibration) take rows [N, C]: flatten token logits to rows first."""
    pos = Positions(student_logits, dim, mask, "slam_loss")
    student, teacher = pos.rows(student_logits), pos.rows(teacher_logits)
    alpha, k = pos.per_position(alpha), pos.per_position(k)
    # At least float32 for the teacher's softmax (a half-precision cache), the student's precision when higher.
    teacher_probs = F.softmax(teacher.to(torch.promote_types(student.dtype, torch.float32)), dim=1)
    top = top_k_mask(teacher_probs, k)
    if alpha_floor is not None:
        alpha = torch.as_tensor(alpha, dtype=teacher_probs.dtype, device=teacher_probs.device).clamp_min(alpha_floor)
    mix = slam_mix(F.softmax(student, dim=1), alpha, top, normalize)
    return pos.reduce(-(slam_target(teacher_probs, top, target) * mix.clamp_min(eps).log()).sum(dim=1), reduction)


def teacher_confidence(teacher_logits: Tensor, score: str = "margin") -> Tensor:
    """The teacher's confidence per sample [B]: top-1 minus top-2 probability ("margin") or top-1 probability
    ("max_prob"); the variable α(x) is a monotone function of."""
    top2 = F.softmax(teacher_logits.float(), dim=1).topk(2, dim=1).values
    if score == "margin":
        return top2[:, 0] - top2[:, 1]
    if score == "max_prob":
        return top2[:, 0]
    raise ValueError(f"teacher_confidence: score must be 'margin' or 'max_prob', not {score!r}")


def fit_isotonic(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The least-squares non-decreasing fit of y on x (pool adjacent violators; Barlow et al. 1972), returned as
    knots (distinct x ascending, fitted value there). Equal x are pooled first (mean y, weight = count)."""
    xs, inverse, counts = torch.unique(x.double().cpu(), return_inverse=True, return_counts=True)
    sums = torch.zeros(len(xs), dtype=torch.float64).index_add_(0, inverse, y.double().cpu())
    # Blocks of (sum, weight); a new point merges backwards while it breaks monotonicity.
    block_sum: list[float] = []
    block_weight: list[float] = []
    block_len: list[int] = []
    for s, w in zip(sums.tolist(), counts.double().tolist()):
        block_sum.append(s)
        block_weight.append(w)
        block_len.append(1)
        while len(block_sum) > 1 and block_sum[-2] / block_weight[-2] >= block_sum[-1] / block_weight[-1]:
            s_last, w_last, n_last = block_sum.pop(), block_weight.pop(), block_len.pop()
            block_sum[-1] += s_last
            block_weight[-1] += w_last
            block_len[-1] += n_last
    fitted = torch.cat([torch.full((n,), s / w, dtype=torch.float64)
                        for s, w, n in zip(block_sum, block_weight, block_len)])
    return xs.float(), fitted.float()


def isotonic_predict(knots_x: Tensor, knots_y: Tensor, x: Tensor) -> Tensor:
    """The fitted function at `x`: linear between knots, constant (the end values) outside them."""
    knots_x, knots_y = knots_x.to(x.device, torch.float32), knots_y.to(x.device, torch.float32)
    if len(knots_x) == 1:
        return knots_y.expand(x.shape).clone()
    x = x.float().clamp(knots_x[0], knots_x[-1])
    right = torch.searchsorted(knots_x, x).clamp(1, len(knots_x) - 1)
    x0, x1, y0, y1 = knots_x[right - 1], knots_x[right], knots_y[right - 1], knots_y[right]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def top_k_accuracy_curve(teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """acc[k - 1] = share of rows whose label is among the teacher's k largest logits, for k = 1..C."""
    rank = (teacher_logits > teacher_logits.gather(1, labels.reshape(-1, 1))).sum(dim=1)  # 0 = label on top
    hits = torch.bincount(rank.cpu(), minlength=teacher_logits.shape[1]).double()
    return (hits.cumsum(0) / len(labels)).float()


def choose_k(top_k_accuracy: Tensor, target: float, minimum: int = 2) -> int:
    """The smallest k >= `minimum` whose top-k accuracy reaches `target` (all classes when none does)."""
    reached = (top_k_accuracy >= target).nonzero().flatten()
    k = int(reached[0]) + 1 if len(reached) else len(top_k_accuracy)
    return max(k, min(minimum, len(top_k_accuracy)))


def calibrate_slam(val_logits: Tensor, val_labels: Tensor, confidence: str = "margin",
                   topk_target: float = 0.9) -> tuple[tuple[Tensor, Tensor], int]:
    """α(x)'s isotonic knots (in `teacher_confidence`) and k, fitted on the teacher's labeled validation outputs."""
    correct = val_logits.argmax(1).eq(val_labels).float()
    knots = fit_isotonic(teacher_confidence(val_logits, confidence), correct)
    return knots, choose_k(top_k_accuracy_curve(val_logits, val_labels), topk_target)


# Running sums behind the α histogram a run logs; `alpha_summary` turns them into shares.
ALPHA_SUMS = ("seen", "alpha", "alpha_zero", "alpha_below_half", "alpha_below_1_over_k", "mass_outside_topk")


def alpha_sums(alpha: Tensor, teacher_logits: Tensor, k: int) -> Tensor:
    """Sums over a batch, in the order of ALPHA_SUMS (float64, on the batch's device): rows, α, rows with α = 0,
    α < 1/2, α < 1/k, and the teacher's probability mass outside its top k."""
    probs = F.softmax(teacher_logits.float(), dim=1)
    outside = 1 - probs.topk(min(k, probs.shape[1]), dim=1).values.sum(dim=1)
    alpha = alpha.double()
    return torch.stack([torch.tensor(float(len(alpha)), dtype=torch.float64, device=alpha.device), alpha.sum(),
                        (alpha == 0).sum().double(), (alpha < 0.5).sum().double(), (alpha < 1 / k).sum().double(),
                        outside.double().sum()])


def alpha_summary(sums: Tensor) -> dict[str, float]:
    """Mean α, the shares of rows with α = 0, α < 1/2, α < 1/k, and the mean teacher mass outside its top k."""
    seen, *rest = sums.tolist()
    names = ("alpha_mean", "alpha_zero_share", "alpha_below_half_share", "alpha_below_1_over_k_share",
             "teacher_mass_outside_topk")
    return {name: value / max(seen, 1.0) for name, value in zip(names, rest)}
