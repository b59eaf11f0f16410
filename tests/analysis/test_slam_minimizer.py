"""The per-example minimiser of SLaM's loss (analysis/slam_minimizer.py): it converges to the closed-form minimiser,
the hard normalised loss sends every example above the α floor to the teacher's top-1, and the soft un-normalised
loss (the old default) loses accuracy on a weak teacher."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdforge.analysis.slam_minimizer import (
    VARIANTS, Variant, diagnose, diagnose_run, minimize_per_example, score, synthetic_teacher, top_shares,
)
from kdforge.losses import calibrate_slam, isotonic_predict, slam_target, teacher_confidence, top_k_mask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _closed_form(teacher_logits: torch.Tensor, alpha: torch.Tensor, k: int, variant: Variant) -> torch.Tensor:
    """The minimiser over the simplex of -sum_c y_c log(A_c f_c + B_c), every y_c > 0, A_c > 0 (KKT, water-filling):
    f_c = max(0, y_c s - B_c / A_c) with s set by sum f = 1 (bisection). In the mask A = α - (1 - α)/Z,
    B = (1 - α)/Z; outside it A = α, B = 0."""
    p = teacher_logits.softmax(1)
    mask = top_k_mask(p, k).bool()
    y = slam_target(p, mask.double(), variant.target)
    z = (k - 1) if variant.normalize else 1
    a = alpha.double().reshape(-1, 1)
    shift = torch.where(mask, ((1 - a) / z) / (a - (1 - a) / z), torch.zeros_like(p))
    lo, hi = torch.zeros(len(p), 1, dtype=torch.float64), torch.full((len(p), 1), 1e6, dtype=torch.float64)
    for _ in range(200):
        mid = (lo + hi) / 2
        over = (y * mid - shift).clamp_min(0).sum(1, keepdim=True) > 1
        hi, lo = torch.where(over, mid, hi), torch.where(over, lo, mid)
    return (y * (lo + hi) / 2 - shift).clamp_min(0)


@pytest.fixture(scope="module")
def weak():
    """A 10-class Gaussian teacher right on about half the examples, α and k fitted on 500 validation examples."""
    logits, labels = synthetic_teacher(1500, 1.52, seed=0)
    val_logits, val_labels = synthetic_teacher(500, 1.52, seed=1)
    knots, k = calibrate_slam(val_logits, val_labels)
    return logits, labels, val_logits, val_labels, isotonic_predict(*knots, teacher_confidence(logits)), k


@pytest.mark.parametrize("target,normalize", [("soft", False), ("soft", True), ("soft_topk", False),
                                              ("soft_topk", True)])
def test_numerical_minimiser_matches_the_closed_form(weak, target, normalize) -> None:
    logits, _, _, _, alpha, k = weak
    variant = Variant("v", target, normalize)
    star = 1 / k if normalize else 0.5
    rows = alpha > star + 0.02  # where the mixing is strictly increasing in f on the mask
    logits, alpha = logits[rows][:300], alpha[rows][:300]
    exact = _closed_form(logits, alpha, k, variant)
    found = minimize_per_example(logits, alpha, k, variant).softmax(1)
    assert (found - exact).abs().max() < 0.05
    assert torch.equal(found.argmax(1), exact.argmax(1))


def test_hard_normalised_minimiser_is_the_teachers_top1_above_the_floor(weak) -> None:
    logits, _, _, _, alpha, k = weak
    top1, above = logits.argmax(1), alpha > 1 / k
    assert 0.9 < above.double().mean() < 1  # both kinds of example are there
    free = minimize_per_example(logits, alpha, k, Variant("hard, normalised", "hard", True))
    assert torch.equal(free.argmax(1)[above], top1[above])  # the top is unique: the other classes stay lower
    below = alpha < 1 / k
    assert (top_shares(free, top1)[below] == 0).all()  # below 1/k the mix reverses: the top-1 is pushed down
    floored = minimize_per_example(logits, alpha, k, Variant("hard, normalised + floor", "hard", True, "auto"))
    assert torch.equal(floored.argmax(1)[above], top1[above])
    assert (floored[~above] == 0).all()  # at the floor the loss is flat: switched off, the logits never move


def test_soft_unnormalised_minimiser_loses_accuracy_on_a_weak_teacher(weak) -> None:
    logits, labels, val_logits, val_labels, alpha, k = weak
    chosen = [v for v in VARIANTS if v.alpha_floor == "none" and v.target in ("soft", "hard")]
    result = diagnose(logits, labels, val_logits, val_labels, variants=chosen)
    acc = {label: row["accuracy"] for label, row in result.rows.items()}
    teacher = result.teacher_accuracy
    assert 0.45 < teacher < 0.58 and result.k >= 3
    # The ordering the issue reports (22.2 < 31.0 < 43.6 < 50.3 % for a 51.6 % teacher).
    assert acc["soft, un-normalised (old default)"] < acc["hard, un-normalised"] < acc["soft, normalised"] \
        < acc["hard, normalised"] <= teacher
    assert acc["soft, un-normalised (old default)"] < teacher - 0.15
    assert result.rows["soft, un-normalised (old default)"]["outside_topk"] > 0.3  # mass left the top k
    assert acc["hard, normalised"] > teacher - 0.03


def test_the_floor_switches_off_exactly_the_examples_below_it(weak) -> None:
    logits, labels, _, _, alpha, k = weak
    variant = Variant("hard, un-normalised + floor", "hard", False, "auto")
    row = score(minimize_per_example(logits, alpha, k, variant), labels, logits, k)
    below = alpha <= 0.5
    assert row["switched_off"] == pytest.approx(below.double().mean().item())
    assert row["outside_topk"] == 0
    assert row["active_accuracy"] == pytest.approx(logits.argmax(1).eq(labels)[~below].double().mean().item())


def test_top_shares_splits_ties() -> None:
    logits = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 1.0]])
    got = top_shares(logits, torch.tensor([0, 2, 2]))
    assert torch.allclose(got, torch.tensor([0.5, 1 / 3, 0.0], dtype=torch.float64))


def test_diagnose_run_on_a_saved_teacher(tmp_path) -> None:
    overrides = [f"teacher.store_dir={tmp_path}", "teacher.model.name=mlp", "teacher.model.params={hidden: [16]}",
                 "teacher.recipe.train.epochs=20"]
    variant = (Variant("hard, normalised", "hard", True),)
    result = diagnose_run(str(CONFIGS / "digits_pseudo_hard.yaml"), overrides, steps=20, variants=variant)
    assert 0.3 < result.teacher_accuracy <= 1 and 2 <= result.k <= 10
    assert set(result.rows["hard, normalised"]) == {"accuracy", "active_accuracy", "agreement", "switched_off",
                                                    "outside_topk"}
    saved = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*"))
    again = diagnose_run(str(CONFIGS / "digits_pseudo_hard.yaml"), overrides, steps=20, variants=variant)
    assert again == result and sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*")) == saved  # reused
