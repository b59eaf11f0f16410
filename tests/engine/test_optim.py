import math

import pytest
import torch

from kdforge.config.schema import OptimConfig, ScheduleConfig
from kdforge.engine.optim import build_optimizer, build_scheduler, lr_factor


def _lrs(cfg: ScheduleConfig, epochs: int = 10, steps: int = 4) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(lr=1.0))
    sched = build_scheduler(opt, cfg, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_starts_at_base_and_ends_at_min():
    lrs = _lrs(ScheduleConfig(name="cosine", min_lr=0.1))
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_is_linear_then_schedule():
    cfg = ScheduleConfig(name="constant", warmup_epochs=2)
    lrs = _lrs(cfg, epochs=4, steps=4)
    assert lrs[:8] == pytest.approx([(i + 1) / 8 for i in range(8)])
    assert lrs[8:] == pytest.approx([1.0] * 8)


def test_multistep_and_step():
    lrs = _lrs(ScheduleConfig(name="multistep", milestones=[3, 6], gamma=0.1), epochs=8, steps=2)
    assert lrs[5] == pytest.approx(1.0) and lrs[6] == pytest.approx(0.1) and lrs[12] == pytest.approx(0.01)
    assert lr_factor(7, ScheduleConfig(name="step", step_size=3, gamma=0.5), 1.0, 10, 1) == pytest.approx(0.25)


def test_adamw_and_sgd_skip_frozen_params():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1), requires_grad=False)
    assert len(build_optimizer([a, b], OptimConfig(name="adamw")).param_groups[0]["params"]) == 1
    sgd = build_optimizer([a, b], OptimConfig(name="sgd", nesterov=True))
    assert sgd.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("epochs,steps,pct", [(10, 4, 0.3), (3, 17, 0.25), (5, 7, 0.5)])
def test_onecycle_matches_torch_step_by_step(epochs, steps, pct):
    cfg = ScheduleConfig(name="onecycle", pct_start=pct, div_factor=25.0, final_div_factor=1e4)
    ours = _lrs(cfg, epochs, steps)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=epochs * steps, pct_start=pct,
                                              anneal_strategy="cos", cycle_momentum=False, div_factor=25.0,
                                              final_div_factor=1e4, three_phase=False)
    theirs = []
    for _ in range(epochs * steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert max(ours) > 0.99 and ours[0] == pytest.approx(1 / 25)  # the peak falls between steps unless integral


def test_fractional_warmup_by_hand():
    # 0.5 epoch of 4 steps = 2 warm-up steps: lr * 1/2, lr * 2/2, then constant
    assert _lrs(ScheduleConfig(name="constant", warmup_epochs=0.5), epochs=2, steps=4)[:4] == [0.5, 1.0, 1.0, 1.0]
    # 1.5 epochs of 2 steps = 3 steps: 1/3, 2/3, 3/3; cosine then measured from epoch 1.5 of 3
    lrs = _lrs(ScheduleConfig(name="cosine", warmup_epochs=1.5), epochs=3, steps=2)
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * (2.0 - 1.5) / 1.5)))


def test_adam_is_adam_with_l2_not_adamw():
    torch.manual_seed(0)
    w = torch.randn(5)
    grads = [torch.randn(5) for _ in range(3)]
    results = {}
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        ours = torch.nn.Parameter(w.clone())
        theirs = torch.nn.Parameter(w.clone())
        a = build_optimizer([ours], OptimConfig(name=name, lr=0.1, weight_decay=0.1))
        b = cls([theirs], lr=0.1, betas=(0.9, 0.999), weight_decay=0.1)
        for g in grads:
            ours.grad, theirs.grad = g.clone(), g.clone()
            a.step()
            b.step()
        assert torch.equal(ours.data, theirs.data)
        results[name] = ours.data
    assert not torch.allclose(results["adam"], results["adamw"])  # L2 vs decoupled decay really differ


def test_python_construction_errors_are_one_line_config_errors():
    from kdforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^optim\.name: Input should be 'sgd', 'adam' or 'adamw' \(got 'adm'\)$"):
        OptimConfig(name="adm")
    with pytest.raises(ConfigError, match=r"^schedule\.name: Input should be .*'onecycle'"):
        ScheduleConfig(name="exponential")
    with pytest.raises(ConfigError, match=r"schedule: warmup_epochs and warmup_steps do not combine with onecycle"):
        ScheduleConfig(name="onecycle", warmup_epochs=1)
    with pytest.raises(ConfigError, match=r"^optim\.lr: Input should be a finite number"):
        OptimConfig(lr=float("inf"))


def test_onecycle_holds_its_final_lr_after_the_last_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(lr=1.0))
    sched = build_scheduler(opt, ScheduleConfig(name="onecycle"), 2, 5)
    for _ in range(12):  # two steps past the end: the engine steps the schedule after the final step too
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / (25 * 1e4))


def test_unknown_key_from_python_lists_the_allowed_ones():
    from kdforge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^optim\.lrr: unknown key; allowed: betas, lr, momentum, name, nesterov, "
                                          r"no_decay_norm_bias, weight_decay$"):
        OptimConfig(lrr=0.1)
    with pytest.raises(ConfigError, match=r"optim\.betas\.0: Input should be less than 1"):
        OptimConfig(betas=(1.5, 0.9))
