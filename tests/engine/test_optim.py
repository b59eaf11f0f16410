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
