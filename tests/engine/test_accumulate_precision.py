"""train.accumulate (gradient accumulation, exact against the larger batch; resume only at optimizer steps) and
train.precision (bf16 autocast on the CPU, fp16 refused there; losses in fp32 under autocast)."""
from __future__ import annotations

import pytest
import torch

import kdforge.methods as methods
import kdforge.models as models
from kdforge.data import AugmentSettings, Batches
from kdforge.engine import Trainer, latest_checkpoint, load_checkpoint, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe, ScheduleSettings
from kdforge.errors import ConfigError
from kdforge.losses.common import soft_cross_entropy
from kdforge.losses.kd import kd_loss
from kdforge.methods import MethodSpec
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher
from support import Stop, stop_after

MLP = ModelSpec(name="mlp", params={"hidden": [32], "dropout": 0.0})  # no dropout: its masks are per forward


@pytest.fixture(scope="module")
def bundle(digits):
    return digits


def _teacher(bundle) -> LiveTeacher:
    seed_everything(7)
    return LiveTeacher(models.build(ModelSpec(name="mlp", params={"hidden": [48]}), bundle.spec))


def _trainer(bundle, run_dir, *, batch, accumulate=1, method="ce", teacher=None, epochs=2, precision="fp32",
             checkpoint_steps=None, callbacks=()):
    seed_everything(0)
    student = models.build(MLP, bundle.spec)
    distiller = methods.build(MethodSpec(name=method), student, teacher,
                              methods.Setup.for_data(bundle.spec, bundle.train))
    # SGD with momentum and weight decay under a cosine schedule: a step taken at the wrong time, with the wrong
    # scale, or a schedule counting micro-batches would all show in the weights
    recipe = Recipe(seed=0, optim=OptimSettings(lr=0.1, momentum=0.9, weight_decay=5e-3),
                    schedule=ScheduleSettings(name="cosine", warmup_epochs=0.5),
                    train=LoopSettings(epochs=epochs, progress=False, tensorboard=False, accumulate=accumulate,
                                       precision=precision, checkpoint_steps=checkpoint_steps))
    return Trainer(distiller, Batches(bundle, batch, AugmentSettings()), recipe, run_dir, callbacks=callbacks)


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.method.trainable().state_dict().items()}


@pytest.mark.parametrize("method", ["ce", "kd"])
def test_accumulating_four_micro_batches_is_one_batch_four_times_larger(bundle, tmp_path, method):
    teacher = _teacher(bundle) if method == "kd" else None
    n = len(bundle.train)
    assert n % 64 != 0, "the epoch should end on a shorter batch, which accumulation must weight by its size"
    big = _trainer(bundle, tmp_path / "big", batch=64, method=method, teacher=teacher)
    big.fit()
    small = _trainer(bundle, tmp_path / "small", batch=16, accumulate=4, method=method, teacher=teacher)
    small.fit()
    assert small.plan.steps_per_epoch == -(-n // 16) and small.plan.optimizer_steps_per_epoch == big.plan.steps_per_epoch
    sched_big, sched_small = big.optimizers["main"].scheduler, small.optimizers["main"].scheduler
    assert sched_small.last_epoch == sched_big.last_epoch == 2 * big.plan.steps_per_epoch  # one per optimizer step
    a, b = _weights(big), _weights(small)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    start = _trainer(bundle, tmp_path / "start", batch=64, method=method, teacher=teacher, epochs=1)
    moved = max(float((a[k] - _weights(start)[k]).abs().max()) for k in a)
    assert moved > 1e-2  # the comparison above is not between two untrained models


def test_a_plain_sum_of_micro_batch_losses_would_not_match(bundle, tmp_path):
    """The check above can fail: micro-batches with unit weight (no 1/N) give other weights."""
    big = _trainer(bundle, tmp_path / "big", batch=64, epochs=1)
    big.fit()
    small = _trainer(bundle, tmp_path / "small", batch=16, accumulate=4, epochs=1)
    begin = small.stepping.begin

    def unit_weight(*args):
        begin(*args)
        small.stepping.weight = 1.0

    small.stepping.begin = unit_weight
    small.fit()
    a, b = _weights(big), _weights(small)
    assert any(not torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4) for k in a)


def _record_saves(trainer, stop_in_epoch: int | None = None) -> list[tuple[int, int | None]]:
    """Wrap `trainer`'s checkpointing: the (epoch, batch) of every checkpoint it writes; with `stop_in_epoch`,
    the run stops (as a kill would) right after the first mid-epoch checkpoint of that epoch."""
    saves: list[tuple[int, int | None]] = []
    save = trainer._save

    def recorded(epoch, step, batch=None, acc=None):
        save(epoch, step, batch=batch, acc=acc)
        saves.append((epoch, batch))
        if batch is not None and epoch == stop_in_epoch:
            raise Stop

    trainer._save = recorded
    return saves


def test_mid_epoch_checkpoints_fall_on_optimizer_steps_and_resume_exactly(bundle, tmp_path):
    full = _trainer(bundle, tmp_path / "full", batch=16, accumulate=4, checkpoint_steps=3)
    saves = _record_saves(full)
    full.fit()
    mid = [b for _, b in saves if b is not None]
    assert mid and all(b % 4 == 0 for b in mid)  # due every 3 batches, taken at the next group end only
    cut = _trainer(bundle, tmp_path / "cut", batch=16, accumulate=4, checkpoint_steps=3)
    _record_saves(cut, stop_in_epoch=1)
    with pytest.raises(Stop):
        cut.fit()
    assert "_batch_" in latest_checkpoint(tmp_path / "cut" / "checkpoints").name
    resumed = _trainer(bundle, tmp_path / "cut", batch=16, accumulate=4, checkpoint_steps=3)
    resumed.fit(resume=True)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_accumulation_is_refused_for_a_method_that_owns_its_step(bundle, tmp_path):
    with pytest.raises(ConfigError, match=r"^train.accumulate: ProKT owns its training step"):
        _trainer(bundle, tmp_path, batch=16, accumulate=2, method="prokt", teacher=_teacher(bundle))
    with pytest.raises(ConfigError, match="train.accumulate"):
        LoopSettings(accumulate=0)


def test_bf16_runs_the_forward_under_autocast_on_the_cpu(bundle, tmp_path):
    seen: list[torch.dtype] = []
    trainer = _trainer(bundle, tmp_path, batch=64, epochs=1, precision="bf16")
    first = next(m for m in trainer.method.student.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    result = trainer.fit()
    assert seen and seen[0] == torch.bfloat16  # the first forward is a training one, under autocast
    assert seen[-1] == torch.float32  # evaluation runs in fp32
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainer.method.parameters())
    assert result.val["top1"] > 0.5  # it learned (10 classes)


def test_fp16_is_refused_on_the_cpu_in_one_line(bundle, tmp_path):
    with pytest.raises(ConfigError, match=r"^train.precision: fp16 needs a CUDA device.*use bf16") as e:
        _trainer(bundle, tmp_path, batch=64, precision="fp16")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="train.precision: 'fp8' is not one of fp32, bf16, fp16"):
        LoopSettings(precision="fp8")


def test_temperature_losses_run_in_fp32_on_half_logits():
    g = torch.Generator().manual_seed(0)
    s, t = (torch.randn(32, 10, generator=g) * 8 for _ in range(2))
    for dtype in (torch.bfloat16, torch.float16):
        hs, ht = s.to(dtype), t.to(dtype)
        for loss in (kd_loss, lambda a, b: soft_cross_entropy(a, b, 4.0)):
            got = loss(hs, ht)
            assert got.dtype == torch.float32
            assert torch.equal(got, loss(hs.float(), ht.float()))  # the same as upcasting first: no half rounding
    assert kd_loss(s.double(), t.double()).dtype == torch.float64  # wider types are left alone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_fp16_on_cuda_scales_the_loss_and_resumes_exactly(bundle, tmp_path):
    def make(run_dir, callbacks=()):
        t = _trainer(bundle, run_dir, batch=32, accumulate=2, precision="fp16", epochs=2, callbacks=callbacks)
        assert t.runtime.device.type == "cuda"
        return t

    full = make(tmp_path / "full")
    full.fit()
    assert full.stepping.scaler is not None and full.stepping.scaler.get_scale() > 1
    state = load_checkpoint(latest_checkpoint(tmp_path / "full" / "checkpoints")).state
    assert "scaler" in state["stepping"]
    cut = make(tmp_path / "cut", callbacks=[stop_after(0)])
    with pytest.raises(Stop):
        cut.fit()
    resumed = make(tmp_path / "cut")
    resumed.fit(resume=True)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.stepping.scaler.get_scale() == full.stepping.scaler.get_scale()
