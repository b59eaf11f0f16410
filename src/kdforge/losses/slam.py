"""SLaM: Kontonis, Iliopoulos, Trinh, Baykal, Menghani & Vee, "SLaM: Student-Label Mixing for Distillation with
Unlabeled Examples", NeurIPS 2023 (arXiv 2302.03806). Official code: supplementary material only (not public).

The teacher's pseudo-label y_s(x) is modelled as the true label with probability α(x) and, otherwise, as one of the
other classes among the teacher's top k(x). The student f(x) is fitted through that noise model (a "forward
loss-adjustment"): it is trained against y_s(x) with its own prediction mixed as

    mix(f; α, k) = α(x) f(x) + (1 - α(x)) (1 - f(x)) ⊙ top(y_s(x); k(x)) / (k(x) - 1)      (Sec. 3, theory form)

where top(y; k) is the 0/1 mask of the k largest classes of y. Remark B.1: the experiments drop the 1/(k - 1)
("not normalizing ... resulted in better results overall"); `normalize=False` is that form and the default.

Choices where the paper (as available here) leaves room, stated once:
- the loss is the cross-entropy -sum_c y_s,c log mix_c with y_s the teacher's softmax (or its one-hot top-1),
  mix clamped away from 0 for the log;
- α(x) is an isotonic (monotone non-decreasing) regression of "teacher's top-1 is right" on the teacher's margin
  (top-1 minus top-2 probability) or top-1 probability, fitted on labeled validation data by pool-adjacent-
  violators and read off by linear interpolation between the fitted points, clipped at the ends (scikit-learn's
  IsotonicRegression(out_of_bounds="clip") does the same);
- k(x) is one k for all x: the smallest k >= 2 whose validation top-k accuracy reaches a target (default 0.9).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
    wrong = (1 - alpha) * (1 - student_probs) * mask
    if normalize:
        wrong = wrong / (mask.sum(dim=1, keepdim=True) - 1).clamp_min(1)
    return alpha * student_probs + wrong


def slam_loss(student_logits: Tensor, teacher_logits: Tensor, alpha: Tensor, k: Tensor | int,
              normalize: bool = False, hard_target: bool = False, eps: float = 1e-7) -> Tensor:
    """SLaM's unlabeled loss: batch mean of -sum_c y_s,c log mix(f; α, k)_c with f = softmax(student_logits),
    y_s = softmax(teacher_logits) (its one-hot top-1 with `hard_target`) and the mask top(y_s; k).

    α = 1 (an always-right teacher) gives CE(y_s, f): plain distillation. A teacher at chance among its top k
    (α = 1/k, normalized form, or k = 2 in either form) makes mix = 1/k on the mask whatever f is: a target inside
    the mask (a hard one, or k = C) then gives no gradient, so the student's own labeled loss decides. Soft
    target mass outside the top k meets mix = α f there: plain distillation, weighted by α."""
    # At least float32 for the teacher's softmax (a half-precision cache), the student's precision when higher.
    teacher_probs = F.softmax(teacher_logits.to(torch.promote_types(student_logits.dtype, torch.float32)), dim=1)
    target = F.one_hot(teacher_probs.argmax(dim=1), teacher_probs.shape[1]).to(teacher_probs) if hard_target \
        else teacher_probs
    mix = slam_mix(F.softmax(student_logits, dim=1), alpha, top_k_mask(teacher_probs, k), normalize)
    return -(target * mix.clamp_min(eps).log()).sum(dim=1).mean()


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
