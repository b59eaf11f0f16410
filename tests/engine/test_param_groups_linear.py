"""optim.no_decay_norm_bias (param groups: no weight decay on norm layers and biases) and schedule.name: linear
(linear warm-up, then linear decay: the usual transformer schedule), with schedule.warmup_steps."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import kdforge.methods as methods
import kdforge.models as models
from kdforge.config.schema import ExperimentConfig, OptimConfig, ScheduleConfig
from kdforge.engine import Plan
from kdforge.engine.optim import build_optimizer, build_scheduler, lr_factor
from kdforge.engine.settings import OptimSettings, Recipe, ScheduleSettings
from kdforge.errors import ConfigError
from kdforge.methods import MethodSpec
from kdforge.models import ModelSpec


class MyRMSNorm(nn.Module):  # a norm torch does not know, named as Hugging Face names theirs
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4, 8),
                         nn.LayerNorm(8), MyRMSNorm(8), nn.Linear(8, 2, bias=False), nn.GroupNorm(1, 2))


NO_DECAY = {"0.bias", "1.weight", "1.bias", "4.bias", "5.weight", "5.bias", "6.weight", "8.weight", "8.bias"}
DECAY = {"0.weight", "4.weight", "7.weight"}


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_norm_weights_and_all_biases_get_no_weight_decay(name):
    net = _net()
    opt = build_optimizer(net, OptimSettings(name=name, weight_decay=0.01, no_decay_norm_bias=True))
    decay, no_decay = opt.param_groups
    assert _names(net, decay) == DECAY and decay["weight_decay"] == 0.01
    assert _names(net, no_decay) == NO_DECAY and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == OptimSettings().lr


def test_the_groups_act_a_decayed_weight_shrinks_a_norm_weight_does_not():
    net = _net()
    opt = build_optimizer(net, OptimConfig(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.1, no_decay_norm_bias=True))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # only weight decay moves anything
    opt.step()
    after = net.state_dict()
    assert torch.allclose(after["0.weight"], before["0.weight"] * (1 - 0.5 * 0.1))
    assert all(torch.equal(after[k], before[k]) for k in NO_DECAY)


def test_off_by_default_one_group_as_before_and_frozen_parameters_skipped():
    net = _net()
    net[1].weight.requires_grad_(False)
    (group,) = build_optimizer(net, OptimSettings()).param_groups
    assert [id(p) for p in group["params"]] == [id(p) for p in net.parameters() if p.requires_grad]
    groups = build_optimizer(net, OptimSettings(no_decay_norm_bias=True)).param_groups
    assert "1.weight" not in _names(net, groups[0]) | _names(net, groups[1])


def test_bare_parameters_are_split_by_shape():
    net = _net()
    decay, no_decay = build_optimizer(list(net.parameters()), OptimSettings(no_decay_norm_bias=True)).param_groups
    assert _names(net, decay) == DECAY and _names(net, no_decay) == NO_DECAY  # 1-D = biases and norm scales here


def test_a_methods_default_optimizer_gets_the_groups_of_its_student(digits):
    student = models.build(ModelSpec(name="resnet8", params={}), _image_spec())
    method = methods.build(MethodSpec(name="ce"), student, None, methods.Setup.for_data(digits.spec, digits.train))
    recipe = Recipe(optim=OptimSettings(no_decay_norm_bias=True))
    opt = method.configure_optimizers(Plan(recipe, 1, 10))["main"].optimizer
    decay, no_decay = opt.param_groups
    bn = [m for m in student.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and all(id(m.weight) in {id(p) for p in no_decay["params"]} for m in bn)
    assert all(p.dim() > 1 for p in decay["params"]) and no_decay["weight_decay"] == 0.0


def _image_spec():
    from kdforge.data.types import DataSpec

    return DataSpec(name="images", input_shape=(3, 32, 32), num_classes=10)


# ---- schedule: linear ----------------------------------------------------------------------------------------
def _factors(cfg, epochs: int, steps: int, base_lr: float = 1.0) -> list[float]:
    return [lr_factor(s, cfg, base_lr, epochs, steps) for s in range(epochs * steps)]


def test_linear_warmup_steps_then_linear_decay_hand_values():
    # 2 epochs of 5 steps, warm-up 2 steps: (s+1)/2 while s < 2, then (10 - s) / (10 - 2)
    f = _factors(ScheduleSettings(name="linear", warmup_steps=2), epochs=2, steps=5)
    assert f == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    # min_lr is the floor the decay ends at (lr 0.5, min_lr 0.1: factor 0.2 at the end)
    f = _factors(ScheduleSettings(name="linear", min_lr=0.1), epochs=1, steps=4, base_lr=0.5)
    assert f == pytest.approx([1.0, 0.2 + 0.8 * 3 / 4, 0.2 + 0.8 * 2 / 4, 0.2 + 0.8 * 1 / 4])


def test_linear_with_a_fractional_warmup_in_epochs_and_through_the_scheduler():
    cfg = ScheduleConfig(name="linear", warmup_epochs=0.5)  # W = 2.5 steps of 5 per epoch, run of 10
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(lr=2.0))
    sched = build_scheduler(opt, cfg, 2, 5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [1 / 2.5, 2 / 2.5, 1.0] + [(10 - s) / 7.5 for s in range(3, 10)]
    assert lrs == pytest.approx([2.0 * w for w in want])


def test_warmup_steps_equal_the_same_warmup_in_epochs_for_other_schedules():
    for name in ("cosine", "constant", "multistep"):
        by_steps = _factors(ScheduleSettings(name=name, warmup_steps=8, milestones=(3,)), epochs=6, steps=4)
        by_epochs = _factors(ScheduleSettings(name=name, warmup_epochs=2, milestones=(3,)), epochs=6, steps=4)
        assert by_steps == pytest.approx(by_epochs)
        assert by_steps[:8] == pytest.approx([(s + 1) / 8 for s in range(8)])


def test_warmup_given_twice_or_with_onecycle_is_one_line():
    with pytest.raises(ConfigError, match=r"^schedule: give the warm-up once: warmup_epochs or warmup_steps"):
        ScheduleConfig(name="linear", warmup_epochs=1, warmup_steps=10)
    with pytest.raises(ConfigError, match=r"^schedule: warmup_epochs and warmup_steps do not combine with onecycle"):
        ScheduleConfig(name="onecycle", warmup_steps=10)


def test_new_keys_at_their_defaults_leave_teacher_folders_and_record_digests_as_they_were():
    from kdforge.api import teacher_dir
    from kdforge.plans.runner import _identity

    base = {"name": "x", "data": {"name": "digits"}, "student": {"name": "mlp"}, "method": {"name": "kd"},
            "teacher": {"model": {"name": "mlp"}, "recipe": {"train": {"epochs": 1}}}}
    cfg = ExperimentConfig.model_validate(base)
    for key in ("precision", "accumulate", "no_decay_norm_bias", "warmup_steps"):
        assert f'"{key}"' not in _identity(cfg)
    changed = json.loads(json.dumps(base))
    changed["teacher"]["recipe"]["train"]["precision"] = "bf16"
    changed["train"] = {"accumulate": 2}
    other = ExperimentConfig.model_validate(changed)
    assert teacher_dir(other) != teacher_dir(cfg) and _identity(other) != _identity(cfg)
    assert '"accumulate": 2' in _identity(other)
