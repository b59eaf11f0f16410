"""Distillation with unlabeled examples (slam and its baselines): data checks before training, one real step on
digits under a label budget, SLaM's calibration, and the teacher's pseudo-label accuracy logged from hidden labels."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import Batches
from kdforge.engine.contract import Plan, StepContext
from kdforge.engine.runtime import Runtime
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.losses import fit_isotonic, slam_loss, teacher_confidence
from kdforge.methods import MethodSpec, Setup, build, check_data
from kdforge.teachers.live import LiveTeacher

UNLABELED = ["pseudo_soft", "pseudo_hard", "pseudo_threshold", "forward_correction", "slam"]


@pytest.fixture(scope="module")
def digits():
    return build_data(DataConfig(name="digits", val_fraction=0.3, label_budget={"labeled": 0.1, "seed": 0}))


class _Recorder:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def log(self, event: str, step: int, **values: float) -> None:
        self.records.append({"event": event, **values})


def _teacher(data) -> nn.Module:
    """A linear teacher fitted for a few steps on the labeled part: better than chance, far from perfect."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = data.train.x.flatten(1), data.train.y
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _step(name: str, data, teacher: nn.Module, params: dict | None = None):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    method = build(MethodSpec(name=name, params=params or {}), student, LiveTeacher(teacher),
                   Setup.for_data(data.spec, data.train))
    plan = Plan(Recipe(), 1, 1)
    recorder = _Recorder()
    ctx = StepContext(plan=plan, batches=Batches(data, 32), runtime=Runtime.from_env("cpu"),
                      optimizers=method.configure_optimizers(plan), logger=recorder)  # type: ignore[arg-type]
    before = [p.detach().clone() for p in student.parameters()]
    batch = next(iter(ctx.loader("train").epoch(0)))
    out = method.training_step(batch, ctx)
    moved = any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    return method, out, recorder.records, moved


@pytest.mark.parametrize("name", UNLABELED)
def test_one_step_trains_on_labeled_and_unlabeled_batches_and_logs_pseudo_label_accuracy(name, digits) -> None:
    teacher = _teacher(digits)
    method, out, records, moved = _step(name, digits, teacher, {"unlabeled_batches": 2})
    assert set(out.terms) == {"ce", "unlabeled"} and all(torch.isfinite(v) for v in out.terms.values())
    assert moved
    truth = digits.unlabeled.hidden_y
    with torch.no_grad():
        expected = teacher(digits.unlabeled.x).argmax(1).eq(truth).float().mean().item()
    (logged,) = [r for r in records if r["event"] == "method"]
    assert logged["teacher_pseudo_label_acc"] == pytest.approx(expected, abs=1e-6)
    assert 0 <= float(out.metrics["pseudo_label_acc"]) <= 1


def test_slam_calibrates_alpha_and_k_on_validation(digits) -> None:
    teacher = _teacher(digits)
    method, out, records, _ = _step("slam", digits, teacher, {"topk_target": 0.95})
    with torch.no_grad():
        val_logits = teacher(digits.val.x)
    correct = val_logits.argmax(1).eq(digits.val.y).float()
    knots = fit_isotonic(teacher_confidence(val_logits), correct)
    assert all(torch.equal(a, b) for a, b in zip(method.knots, knots))
    ranks = (val_logits > val_logits.gather(1, digits.val.y[:, None])).sum(1)
    k = next(k for k in range(2, 11) if (ranks < k).float().mean() >= 0.95)
    assert method.k == k
    assert (method.knots[1].diff() >= 0).all()  # α is monotone in the teacher's margin
    # The logged α is the batch mean of the fitted function on the teacher's margins: between its end values.
    assert float(knots[1][0]) <= float(out.metrics["alpha"]) <= float(knots[1][-1])
    (logged,) = [r for r in records if r["event"] == "method"]
    assert logged["slam_k"] == k and logged["teacher_val_top1"] == pytest.approx(correct.mean().item(), abs=1e-6)


def test_forward_correction_estimates_the_teachers_confusion_on_validation(digits) -> None:
    teacher = _teacher(digits)
    method, _, _, _ = _step("forward_correction", digits, teacher, {"smoothing": 0.0})
    with torch.no_grad():
        pred = teacher(digits.val.x).argmax(1)
    for c in range(10):
        rows = digits.val.y == c
        assert torch.allclose(method.transition[c], torch.bincount(pred[rows], minlength=10).float() / rows.sum())


@pytest.mark.parametrize("name", UNLABELED)
def test_unlabeled_methods_need_a_label_budget(name) -> None:
    with pytest.raises(ConfigError, match=rf"method '{name}' distills on unlabeled examples.*data.label_budget"):
        check_data(MethodSpec(name=name), build_data(DataConfig(name="digits")))


@pytest.mark.parametrize("name", ["slam", "forward_correction"])
def test_calibrating_methods_refuse_a_small_or_test_validation_split(name) -> None:
    small = build_data(DataConfig(name="digits", val_fraction=0.02, label_budget={"labeled": 0.1}))  # 29 samples
    with pytest.raises(ConfigError, match=r"validation split has 29 labeled samples, too few .*min_val_samples=50"):
        check_data(MethodSpec(name=name), small)
    check_data(MethodSpec(name=name, params={"min_val_samples": 29}), small)
    on_test = build_data(DataConfig(name="digits", val_fraction=0, label_budget={"labeled": 0.1}))
    with pytest.raises(ConfigError, match="data.val_fraction=0 makes the test split the validation split"):
        check_data(MethodSpec(name=name), on_test)


def test_slam_applies_its_target_and_alpha_floor_and_logs_the_alpha_histogram(digits) -> None:
    teacher = _teacher(digits)
    params = {"normalize": True, "target": "soft_topk", "alpha_floor": "auto", "unlabeled_batches": 2}
    method, out, records, _ = _step("slam", digits, teacher, params)
    assert method.floor == pytest.approx(1 / method.k)
    # The unlabeled term is slam_loss with the floor, on the two unlabeled batches the step drew (same stream).
    plan = Plan(Recipe(), 1, 1)
    ctx = StepContext(plan=plan, batches=Batches(digits, 32), runtime=Runtime.from_env("cpu"), optimizers={})
    batches = [ctx.next_batch("unlabeled") for _ in range(2)]
    with torch.no_grad():
        t_logits = [teacher(b.x) for b in batches]
    alphas = [method.alpha(t) for t in t_logits]
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # the student of `_step` before its update
    with torch.no_grad():
        expected = sum(slam_loss(student(b.x), t, a, method.k, True, "soft_topk", 1 / method.k)
                       for b, t, a in zip(batches, t_logits, alphas)) / 2
    assert float(out.terms["unlabeled"].detach()) == pytest.approx(float(expected), rel=1e-6)
    # The α histogram covers exactly those rows; `on_epoch_end` logs it with k and the floor.
    recorder = _Recorder()
    ctx.logger = recorder  # type: ignore[assignment]
    method.on_epoch_end(ctx)
    (logged,) = [r for r in recorder.records if r["event"] == "method"]
    alpha = torch.cat(alphas)
    probs = torch.cat(t_logits).softmax(1)
    outside = 1 - probs.topk(method.k, dim=1).values.sum(1)
    assert logged["slam_k"] == method.k and logged["slam_alpha_floor"] == pytest.approx(1 / method.k)
    assert logged["slam_alpha_mean"] == pytest.approx(alpha.mean().item(), abs=1e-6)
    assert logged["slam_alpha_zero_share"] == pytest.approx((alpha == 0).float().mean().item())
    assert logged["slam_alpha_below_half_share"] == pytest.approx((alpha < 0.5).float().mean().item())
    assert logged["slam_alpha_below_1_over_k_share"] == pytest.approx((alpha < 1 / method.k).float().mean().item())
    assert logged["slam_teacher_mass_outside_topk"] == pytest.approx(outside.mean().item(), abs=1e-6)
    # A resumed run carries the running sums on.
    state = method.extra_state()
    fresh, _, _, _ = _step("slam", digits, teacher, params)
    fresh.load_extra_state(state)
    assert torch.equal(fresh._sums, method._sums)


def test_slam_defaults_are_hard_with_the_auto_floor_and_the_old_behaviour_stays_reachable(digits) -> None:
    teacher = _teacher(digits)
    method, _, _, _ = _step("slam", digits, teacher)
    assert method.params.target == "hard" and method.params.alpha_floor == "auto" and method.floor == 0.5
    old, _, _, _ = _step("slam", digits, teacher, {"target": "soft", "alpha_floor": "none"})
    assert old.floor is None
    fixed, _, _, _ = _step("slam", digits, teacher, {"alpha_floor": 0.3})
    assert fixed.floor == 0.3


@pytest.mark.parametrize("params,needle", [
    ({"hard_target": True}, "hard_target"),
    ({"alpha_floor": 1.5}, "alpha_floor"),
    ({"alpha_floor": "half"}, "alpha_floor"),
    ({"target": "onehot"}, "target"),
])
def test_slam_params_refuse_bad_values_naming_the_key(params, needle, digits) -> None:
    with pytest.raises(ConfigError, match=needle):
        build(MethodSpec(name="slam", params=params), nn.Linear(64, 10), LiveTeacher(nn.Linear(64, 10)),
              Setup.for_data(digits.spec, digits.train))


def _slam_trainer(digits, teacher: nn.Module, run_dir, callbacks=()):
    from kdforge.data import Batches
    from kdforge.engine import Trainer

    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    method = build(MethodSpec(name="slam", params={"normalize": True}), student, LiveTeacher(teacher),
                   Setup.for_data(digits.spec, digits.train))
    recipe = Recipe(seed=0, optim=OptimSettings(lr=0.01), train=LoopSettings(epochs=3, progress=False,
                                                                               tensorboard=False))
    return Trainer(method, Batches(digits, 32), recipe, run_dir, callbacks=callbacks)


def _last_method_values(run_dir) -> dict:
    import json

    values: dict = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "method":
            values.update({k: v for k, v in event.items() if k.startswith("slam_")})
    return values


def test_slam_alpha_histogram_survives_a_resume(digits, tmp_path) -> None:
    from support import Stop, stop_after

    teacher = _teacher(digits)
    _slam_trainer(digits, teacher, tmp_path / "full").fit()
    with pytest.raises(Stop):
        _slam_trainer(digits, teacher, tmp_path / "cut", callbacks=[stop_after(1)]).fit()
    _slam_trainer(digits, teacher, tmp_path / "cut").fit(resume=True)
    full, resumed = _last_method_values(tmp_path / "full"), _last_method_values(tmp_path / "cut")
    assert full == resumed and full["slam_alpha_floor"] == pytest.approx(1 / full["slam_k"])
