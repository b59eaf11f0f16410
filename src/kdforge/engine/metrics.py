"""Evaluation metrics of a classifier, and of a student against its teacher."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.data import Split
from kdforge.data.corruptions import corrupt
from kdforge.data.loader import predict


def reliability_bins(logits: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, list[float]]:
    """Equal-width confidence bins (Guo et al., ICML 2017, Sec. 2): per bin its sample count, mean confidence and
    accuracy (0 where empty); what a reliability diagram draws and ECE sums."""
    conf, pred = logits.softmax(-1).max(-1)
    correct = pred.eq(labels).double()
    bins = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)
    n = torch.bincount(bins, minlength=n_bins).double()

    def mean(values: Tensor) -> list[float]:
        return (torch.bincount(bins, weights=values.double(), minlength=n_bins) / n.clamp_min(1)).tolist()

    return {"count": n.tolist(), "confidence": mean(conf), "accuracy": mean(correct)}


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al., ICML 2017, Eq. 3): sum_b |B|/n * |acc(B) - conf(B)|."""
    b = reliability_bins(logits, labels, n_bins)
    gaps = sum(n * abs(a - c) for n, a, c in zip(b["count"], b["accuracy"], b["confidence"]))
    return float(gaps / max(sum(b["count"]), 1.0))


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    k = min(5, logits.shape[-1])
    topk = logits.topk(k, dim=-1).indices
    hits = topk.eq(labels[:, None])
    return {
        "top1": float(hits[:, 0].float().mean()),
        "top5": float(hits.any(-1).float().mean()),
        "nll": float(F.cross_entropy(logits, labels)),
        "ece": expected_calibration_error(logits, labels),
    }


def agreement_metrics(student_logits: Tensor, teacher_logits: Tensor) -> dict[str, float]:
    """Top-1 match rate and mean KL(p_teacher || p_student) at T = 1."""
    kl = F.kl_div(student_logits.log_softmax(-1), teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    return {
        "agreement": float(student_logits.argmax(-1).eq(teacher_logits.argmax(-1)).float().mean()),
        "kl_ts": float(kl),
    }


def evaluate(
    model: nn.Module, split: Split, batch_size: int, device: torch.device,
    extra: Callable[[Tensor], dict[str, float]] | None = None,
) -> dict[str, float]:
    """Classification metrics where the split has labels, plus `extra(logits)` (e.g. agreement with a teacher)."""
    logits = predict(model, split, batch_size, device)
    metrics = classification_metrics(logits, split.y) if split.y is not None else {}
    if extra is not None:
        metrics.update(extra(logits))
    return metrics


def corruption_metrics(model: nn.Module, split: Split, names: Sequence[str], batch_size: int,
                       device: torch.device) -> dict[str, float]:
    """{"top1@<name>": accuracy on `split` under each corruption} (`kdforge.data.corruptions`, fixed severities
    and seed: every run is scored on the same corrupted images)."""
    if split.y is None:
        return {}
    return {f"top1@{name}": evaluate(model, replace(split, x=corrupt(split.x, name)), batch_size, device)["top1"]
            for name in names}
