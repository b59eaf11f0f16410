"""Where does each SLaM variant's loss send a student that could fit every example? A zero-training diagnostic.

For fixed teacher outputs on unlabeled examples (and their hidden labels, read only to score), α(x) and k are fitted
on labeled validation outputs exactly as the `slam` method fits them (losses.calibrate_slam); then, per example,
the student's logits are optimised to a minimiser of `losses.slam_loss` of each variant (target, normalisation, α
floor) over the probability simplex, starting from the uniform student. The loss is convex in the student's
probabilities (a sum of -y_c log of functions affine in f), so the minimiser is the loss's own verdict on the
example, free of architecture, data order and under-training. A variant whose minimiser is right less often than
the teacher's own pseudo-label pulls a student that fits well away from the truth.

Reported per variant: `accuracy` (the minimiser's top-1 against the hidden label; where several classes tie at the
top, the example counts 1/ties, so a switched-off example counts 1/C: the loss leaves it to the student's other
data), `active_accuracy` (the same on the examples not switched off), `agreement` with the teacher's top-1 (same
rule), `switched_off` (share of examples whose loss is flat in the student: the logits never move), `outside_topk`
(share whose minimiser's top class is outside the teacher's top k; ties split, switched-off examples not counted).
Next to them: the teacher's accuracy, k, and the α histogram (losses.alpha_summary).

Functions: `synthetic_teacher` (the Gaussian teacher of the report), `diagnose` (any logits), `diagnose_run` (a
config's saved teacher on its validation and unlabeled splits). From a shell:
    python -m kdforge.analysis.slam_minimizer synthetic
    python -m kdforge.analysis.slam_minimizer configs/fashion_mnist_slam.yaml teacher.store_dir=/tmp/slam/teachers
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from kdforge.losses import (
    SlamTarget, alpha_summary, alpha_sums, calibrate_slam, isotonic_predict, resolve_alpha_floor, slam_loss,
    teacher_confidence, top_k_mask,
)


@dataclass(frozen=True)
class Variant:
    """One SLaM loss: its target, normalisation and α floor (the `slam` method's params of the same names)."""

    label: str
    target: SlamTarget
    normalize: bool
    alpha_floor: Literal["auto", "none"] | float = "none"


VARIANTS: tuple[Variant, ...] = (
    Variant("soft, un-normalised (old default)", "soft", False),
    Variant("soft, normalised", "soft", True),
    Variant("hard, un-normalised", "hard", False),
    Variant("hard, normalised", "hard", True),
    Variant("soft_topk, un-normalised", "soft_topk", False),
    Variant("soft_topk, normalised", "soft_topk", True),
    Variant("soft, un-normalised + floor", "soft", False, "auto"),
    Variant("hard, un-normalised + floor (default)", "hard", False, "auto"),
    Variant("hard, normalised + floor", "hard", True, "auto"),
    Variant("soft_topk, un-normalised + floor", "soft_topk", False, "auto"),
    Variant("soft_topk, normalised + floor", "soft_topk", True, "auto"),
)


@dataclass
class Diagnosis:
    teacher_accuracy: float
    k: int
    alpha: dict[str, float]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)


def minimize_per_example(teacher_logits: Tensor, alpha: Tensor, k: int, variant: Variant, steps: int = 300,
                         lr: float = 0.2) -> Tensor:
    """Student logits [N, C] (float64) at a minimiser of each row's slam_loss, from zeros (the uniform student).

    Adam with a cosine-decayed step on the sum of the rows' losses: rows share no parameter, and Adam's update is
    per coordinate, so each row is minimised on its own. Rows whose loss is flat never move."""
    teacher = teacher_logits.double()
    floor = resolve_alpha_floor(variant.alpha_floor, k, variant.normalize)
    logits = torch.zeros_like(teacher, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for _ in range(steps):
        opt.zero_grad()
        loss = slam_loss(logits, teacher, alpha.double(), k, variant.normalize, variant.target, floor) * len(teacher)
        loss.backward()
        opt.step()
        schedule.step()
    return logits.detach()


def tied_top(logits: Tensor, tol: float = 1e-9) -> Tensor:
    """Per row, the classes tied at the top of `logits` (within `tol`), each weighted 1/ties [N, C]."""
    top = (logits >= logits.max(dim=1, keepdim=True).values - tol).double()
    return top / top.sum(dim=1, keepdim=True)


def top_shares(logits: Tensor, classes: Tensor, tol: float = 1e-9) -> Tensor:
    """Per row, 1/t if `classes` is among the t classes tied at the top of `logits` (within `tol`), else 0."""
    return tied_top(logits, tol).gather(1, classes.reshape(-1, 1)).squeeze(1)


def score(minimiser: Tensor, labels: Tensor, teacher_logits: Tensor, k: int) -> dict[str, float]:
    """accuracy, agreement with the teacher's top-1, switched_off and outside_topk of a minimiser (module doc)."""
    flat = (minimiser.max(dim=1).values - minimiser.min(dim=1).values) < 1e-12
    outside = (tied_top(minimiser) * (1 - top_k_mask(teacher_logits, k).double())).sum(dim=1)
    hits = top_shares(minimiser, labels)
    active = float(hits[~flat].mean()) if bool((~flat).any()) else math.nan
    return {"accuracy": float(hits.mean()), "active_accuracy": active,
            "agreement": float(top_shares(minimiser, teacher_logits.argmax(1)).mean()),
            "switched_off": float(flat.double().mean()), "outside_topk": float((outside * ~flat).double().mean())}


def diagnose(teacher_logits: Tensor, labels: Tensor, val_logits: Tensor, val_labels: Tensor,
             variants: Sequence[Variant] = VARIANTS, confidence: str = "margin", topk_target: float = 0.9,
             steps: int = 300) -> Diagnosis:
    """The minimiser of each variant on the rows of `teacher_logits` (labels hidden from the loss), with α and k
    fitted on (`val_logits`, `val_labels`) as the `slam` method fits them."""
    knots, k = calibrate_slam(val_logits, val_labels, confidence, topk_target)
    alpha = isotonic_predict(*knots, teacher_confidence(teacher_logits, confidence))
    result = Diagnosis(teacher_accuracy=float(teacher_logits.argmax(1).eq(labels).double().mean()), k=k,
                       alpha=alpha_summary(alpha_sums(alpha, teacher_logits, k)))
    for variant in variants:
        minimiser = minimize_per_example(teacher_logits, alpha, k, variant, steps)
        result.rows[variant.label] = score(minimiser, labels, teacher_logits, k)
    return result


def synthetic_teacher(n: int, signal: float, classes: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(logits [n, classes], labels [n]): labels uniform; logits = signal * one_hot(label) + N(0, 1) noise per class.
    `signal` sets the teacher's accuracy (about 0.52, 0.80, 0.98 at 1.52, 2.47, 3.9 with 10 classes)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64)
    return logits + signal * torch.nn.functional.one_hot(labels, classes), labels


def format_table(diagnosis: Diagnosis, title: str = "") -> str:
    a = diagnosis.alpha
    lines = [f"{title}teacher {diagnosis.teacher_accuracy:.1%}, k = {diagnosis.k}, mean α {a['alpha_mean']:.2f}, "
             f"α = 0: {a['alpha_zero_share']:.1%}, α < 1/2: {a['alpha_below_half_share']:.1%}, α < 1/k: "
             f"{a['alpha_below_1_over_k_share']:.1%}, teacher mass outside top k {a['teacher_mass_outside_topk']:.3f}",
             "| variant | minimiser accuracy | on the rest | agreement with teacher | switched off | top class "
             "outside top k |", "|---|---|---|---|---|---|"]
    lines += [f"| {label} | {r['accuracy']:.1%} | {r['active_accuracy']:.1%} | {r['agreement']:.1%} | "
              f"{r['switched_off']:.1%} | {r['outside_topk']:.1%} |" for label, r in diagnosis.rows.items()]
    return "\n".join(lines)


def diagnose_run(config: str, overrides: Sequence[str] = (), steps: int = 300,
                 variants: Sequence[Variant] = VARIANTS) -> Diagnosis:
    """`diagnose` on a config's saved teacher (teacher.store_dir; trained first if missing), its validation split and
    its unlabeled split with the hidden labels; α and k from the config's `slam` params when it has them."""
    from kdforge import api, data
    from kdforge.api import load_config
    from kdforge.data import iter_eval
    from kdforge.errors import ConfigError

    cfg = load_config(config, list(overrides))
    bundle = api.build_data(cfg.data)
    if bundle.unlabeled is None or bundle.unlabeled.hidden_y is None or bundle.val is None or bundle.val.y is None:
        raise ConfigError("data: the diagnostic needs a label budget (data.label_budget) and data.val_fraction > 0")
    teacher = api.prepare_teacher(cfg, bundle).eval()

    def logits(split: str) -> Tensor:
        with torch.no_grad():
            return torch.cat([b.forward(teacher).double() for b in iter_eval(bundle.split(split), 1000)])

    params = cfg.method.params if cfg.method.name == "slam" else {}
    return diagnose(logits("unlabeled"), bundle.unlabeled.hidden_y, logits("val"), bundle.val.y,
                    variants, params.get("confidence", "margin"), params.get("topk_target", 0.9), steps)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdforge.analysis.slam_minimizer", description=__doc__.split(
        "\n")[0])
    parser.add_argument("config", help="'synthetic', or a config with a label budget (its saved teacher is used)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps of the per-example minimisation")
    parser.add_argument("--n", type=int, default=5000, help="synthetic: unlabeled examples per teacher")
    args = parser.parse_args(argv)
    if args.config != "synthetic":
        print(format_table(diagnose_run(args.config, args.overrides, args.steps)))
        return
    for signal in (1.52, 2.47, 3.9):
        u_logits, u_labels = synthetic_teacher(args.n, signal, seed=0)
        v_logits, v_labels = synthetic_teacher(500, signal, seed=1)  # the paper's 500 validation examples
        result = diagnose(u_logits, u_labels, v_logits, v_labels, steps=args.steps)
        print(format_table(result, f"signal {signal}: ") + "\n")


if __name__ == "__main__":
    main()
