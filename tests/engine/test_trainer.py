"""Behaviour of the training loop: exact resume, NaN guard, teacher untouched, refusal to overwrite."""
import pytest
import torch

import kdforge.methods as methods
import kdforge.models as models
from kdforge.data import AugmentSettings, Batches
from kdforge.engine import Trainer, latest_checkpoint, load_checkpoint, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError, TrainingDiverged
from kdforge.methods import MethodSpec
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher
from support import Stop, stop_after

AUG = AugmentSettings(mixup_alpha=0.4, flip=True)  # exercises the loader's RNG as well as dropout's


@pytest.fixture(scope="module")
def bundle(digits):
    return digits


def _trainer(bundle, run_dir, epochs=4, lr=0.01, method="ce", teacher=None, callbacks=(), grad_clip=None):
    seed_everything(0)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [32], "dropout": 0.2}), bundle.spec)
    distiller = methods.build(MethodSpec(name=method), student, teacher, methods.Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(seed=0, optim=OptimSettings(lr=lr),
                    train=LoopSettings(epochs=epochs, progress=False, grad_clip=grad_clip))
    return Trainer(distiller, Batches(bundle, 64, AUG), recipe, run_dir, callbacks=callbacks)


def test_resume_ends_with_same_weights_as_uninterrupted(bundle, tmp_path):
    full = _trainer(bundle, tmp_path / "full")
    full_result = full.fit()
    interrupted = _trainer(bundle, tmp_path / "cut", callbacks=[stop_after(1)])
    with pytest.raises(Stop):
        interrupted.fit()
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "epoch_0001"
    resumed = _trainer(bundle, tmp_path / "cut")  # a fresh process would build everything anew like this
    result = resumed.fit(resume=True)
    assert result.resumed_from == 1
    for (k, a), b in zip(full.method.trainable().state_dict().items(), resumed.method.trainable().state_dict().values()):
        assert torch.equal(a, b), k
    assert result.test == full_result.test


def test_overwrite_is_refused_without_a_flag(bundle, tmp_path):
    _trainer(bundle, tmp_path, epochs=1).fit()
    with pytest.raises(ConfigError, match="--resume, resume=True"):
        _trainer(bundle, tmp_path, epochs=1).fit()
    _trainer(bundle, tmp_path, epochs=1).fit(overwrite=True)


def test_nan_guard_names_step_and_keeps_last_checkpoint(bundle, tmp_path):
    def poison(epoch, record):
        if epoch == 0:  # after the first checkpoint, make every parameter NaN
            for p in trainer.method.trainable().parameters():
                p.data.fill_(float("nan"))

    trainer = _trainer(bundle, tmp_path, epochs=3, callbacks=[poison])
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 1/\d+ \(global step \d+\).*epoch_0000 is intact"):
        trainer.fit()
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert all(torch.isfinite(v).all() for v in ckpt.weights.values())


def test_deferred_nan_guard_names_the_first_bad_step(bundle, tmp_path):
    """The check an accelerator uses (read where the loop syncs anyway), forced on the CPU: the same message,
    the same step, and no checkpoint written after the loss went non-finite."""
    def poison(epoch, record):
        if epoch == 0:
            for p in trainer.method.trainable().parameters():
                p.data.fill_(float("nan"))

    trainer = _trainer(bundle, tmp_path, epochs=3, callbacks=[poison])
    trainer.defer_finite_check = True
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 1/\d+ \(global step (\d+)\).*epoch_0000 is intact") as e:
        trainer.fit()
    assert f"(global step {len(trainer.loader) + 1})" in str(e.value)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "epoch_0000"


def test_no_host_read_per_step_when_deferred(bundle, tmp_path, monkeypatch):
    """Per-step bookkeeping (finiteness, epoch sums, train hits) stays on the device: the loop reads tensors back
    (bool/float/int/item) a number of times per epoch that does not grow with the steps."""
    reads = []
    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original, _n=name: reads.append(_n) or _f(self, *a))

    def count(epochs: int, batch: int) -> tuple[int, int]:
        reads.clear()
        seed_everything(0)
        student = models.build(ModelSpec(name="mlp", params={"hidden": [32]}), bundle.spec)
        method = methods.build(MethodSpec(name="ce"), student, None, methods.Setup.for_data(bundle.spec, bundle.train))
        recipe = Recipe(seed=0, optim=OptimSettings(lr=0.01),
                        train=LoopSettings(epochs=epochs, progress=False, log_every=10**6, tensorboard=False))
        trainer = Trainer(method, Batches(bundle, batch), recipe, tmp_path / f"r{batch}", eval_batch_size=10**6)
        trainer.defer_finite_check = True
        trainer.fit()
        return len(reads), trainer.plan.total_steps

    few, few_steps = count(2, 256)
    many, many_steps = count(2, 16)
    assert many_steps >= 8 * few_steps
    assert many == few  # 16x the steps, not one read more


def test_teacher_stays_frozen_and_in_eval(bundle, tmp_path):
    seed_everything(1)
    net = models.build(ModelSpec(name="mlp", params={"hidden": [16], "dropout": 0.5}), bundle.spec)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = _trainer(bundle, tmp_path, epochs=1, method="kd", teacher=LiveTeacher(net))
    trainer.fit()
    assert not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(k.startswith("teacher") for k in trainer.method.trainable().state_dict())
