"""InfoDrop's fine-tune phase (the official second run without it): the schedule it restarts, InfoDrop off and a
fresh optimizer state from its first step, the same for a teacher trained from a recipe, and a run stopped at or
after the phase boundary that resumes bit-identical to one that never stopped."""
import json
from functools import partial

import pytest
import torch

import kdforge.models.infodrop as infodrop
from kdforge import api, models
from kdforge.api import parse_config
from kdforge.api.finetune import finetune_phase, two_phase_factor
from kdforge.engine import Trainer
from kdforge.engine.optim import lr_factor
from kdforge.engine.settings import ScheduleSettings
from kdforge.errors import ConfigError
from kdforge.methods.ce import CE
from support import Stop

INFODROP = {"layers": [{"conv": "features.0", "output": "features.3"}], "finetune_epochs": 2}
CNN = {"name": "cnn", "params": {"channels": [8, 16], "hidden": 16}}


def _config(run_dir, **over):
    data = {"name": "digits-finetune", "seed": 0, "output_dir": str(run_dir),
            "data": {"name": "digits", "batch_size": 64, "eval_corruptions": ["gaussian_noise", "patch_shuffle"]},
            "student": {**CNN, "infodrop": INFODROP},
            "method": {"name": "ce"},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "schedule": {"name": "multistep", "milestones": [1], "gamma": 0.5},
            "train": {"epochs": 2, "progress": False, "tensorboard": False, "log_every": 1, "checkpoint_steps": 4}}
    return parse_config({**data, **over})


def test_the_official_step_decay_restarts_at_the_same_share_of_the_second_run():
    # bfshi/InfoDrop: 100 epochs, StepLR at int(0.8 * 100) = 80; then 20 epochs, StepLR at int(0.8 * 20) = 16
    first = partial(lr_factor, cfg=ScheduleSettings(name="multistep", milestones=[80]), base_lr=1e-3, epochs=100,
                    steps_per_epoch=3)
    f = partial(two_phase_factor, first=first, first_steps=300, finetune_steps=60, scale=1.0)
    got = [f(s) for s in (0, 239, 240, 299, 300, 347, 348, 359)]
    assert got == pytest.approx([1, 1, 0.1, 0.1, 1, 1, 0.1, 0.1])
    cosine = partial(lr_factor, cfg=ScheduleSettings(name="cosine"), base_lr=1.0, epochs=4, steps_per_epoch=10)
    g = partial(two_phase_factor, first=cosine, first_steps=40, finetune_steps=20, scale=0.1)
    assert g(40) == pytest.approx(0.1) and g(50) == pytest.approx(0.1 * cosine(20)) == pytest.approx(0.05)


def _steps(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in lines if r["event"] == "step"}


def test_infodrop_off_lr_restarted_and_optimizer_fresh_from_the_phase_on(tmp_path, monkeypatch):
    trainer = api.assemble(_config(tmp_path / "run")).trainer()  # the phase joined by the assembly point
    assert trainer.plan.epochs == 4  # train.epochs 2 + finetune_epochs 2
    spe = trainer.plan.steps_per_epoch
    s1 = 2 * spe
    masked, state_sizes = [], []
    real_mask = infodrop.drop_mask
    monkeypatch.setattr(infodrop, "drop_mask", lambda *a, **k: masked.append(trainer.ctx.step) or real_mask(*a, **k))
    trainer.optimizers["main"].optimizer.register_step_pre_hook(lambda opt, *_: state_sizes.append(len(opt.state)))
    trainer.fit()
    assert masked == list(range(s1))  # every training forward of phase 1, none after (nor in validation)
    # momentum buffers exist from the second step on, are cleared right before step S1, then rebuilt
    assert state_sizes[0] == 0 and state_sizes[s1] == 0 and len(state_sizes) == 4 * spe
    assert all(n > 0 for n in state_sizes[1:s1] + state_sizes[s1 + 1:])
    lr = {k: r["lr"] for k, r in _steps(tmp_path / "run").items()}  # the lr for the step after k steps
    expect = [0.05] * spe + [0.025] * spe + [0.05] * spe + [0.025] * spe  # milestone 1 of 2 epochs, both phases
    assert [lr[k] for k in range(1, 4 * spe)] == pytest.approx(expect[1:])


def test_a_teacher_trained_from_a_recipe_gets_the_phase(tmp_path):
    cfg = _config(tmp_path / "s", teacher={
        "model": {**CNN, "infodrop": {**INFODROP, "finetune_epochs": 1, "finetune_lr_factor": 0.1}},
        "store_dir": str(tmp_path / "teachers"),
        "recipe": {"optim": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "constant"},
                   "train": {"epochs": 2, "progress": False, "tensorboard": False, "log_every": 1}}})
    api.prepare_teacher(cfg, api.build_data(cfg.data))
    saved = json.loads((api.teacher_dir(cfg) / "model.json").read_text())["extra"]["test"]
    assert {"top1", "top1@gaussian_noise", "top1@patch_shuffle"} <= set(saved)  # the teacher's own robustness
    run = api.teacher_dir(cfg) / "run"
    lr = {k: r["lr"] for k, r in _steps(run).items()}
    s1 = 2 * (len(lr) // 3)
    assert [lr[k] for k in range(1, 3 * s1 // 2 + 1)] == pytest.approx([0.05] * (s1 - 1) + [0.005] * (s1 // 2 + 1))

    def folder(**infodrop):
        return api.teacher_dir(_config(tmp_path / "s", teacher={**cfg.teacher.model_dump(), "model": {
            **CNN, "infodrop": {**INFODROP, **infodrop}}}))

    assert folder(finetune_epochs=0) != api.teacher_dir(cfg)
    # without the phase the finetune_* keys are left out of the key: InfoDrop teachers trained before they
    # existed keep their folders
    assert folder(finetune_epochs=0) == folder(finetune_epochs=0, finetune_lr_factor=0.3)
    assert folder(finetune_epochs=1) != folder(finetune_epochs=1, finetune_lr_factor=0.3)
    unscored = cfg.model_copy(update={"data": cfg.data.model_copy(update={"eval_corruptions": []})})
    assert api.teacher_dir(unscored) == api.teacher_dir(cfg)  # evaluation settings are not the teacher's identity


@pytest.mark.parametrize("stop_at", ["boundary", "mid_finetune"])
def test_stopped_at_or_after_the_boundary_resumes_bit_identical(tmp_path, monkeypatch, stop_at):
    full = api.run(_config(tmp_path / "full"))
    spe = full["steps"] // 4
    crash = 2 * spe if stop_at == "boundary" else 2 * spe + 7  # first fine-tune step / inside its first epoch
    inner = CE.training_step

    def crashing(self, batch, ctx):
        if ctx.step == crash:
            raise Stop
        return inner(self, batch, ctx)

    monkeypatch.setattr(CE, "training_step", crashing)
    with pytest.raises(Stop):
        api.run(_config(tmp_path / "cut"))
    monkeypatch.setattr(CE, "training_step", inner)
    resumed = api.run(_config(tmp_path / "cut"), resume=True)
    assert resumed["resumed_from_epoch"] == (1 if stop_at == "boundary" else 2)
    a = models.load_model(tmp_path / "full" / "student").state_dict()
    b = models.load_model(tmp_path / "cut" / "student").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == full["test"] and {"top1@gaussian_noise", "top1@patch_shuffle"} <= set(full["test"])


def test_corruptions_of_non_images_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.eval_corruptions: corruptions need image tensors"):
        api.run(_config(tmp_path / "r", data={"name": "mnist1d", "eval_corruptions": ["gaussian_blur"]},
                        student={"name": "mlp"}))


def test_a_method_with_its_own_schedule_is_refused(tmp_path):
    a = api.assemble(_config(tmp_path / "run"))
    for scheduler in (None, "shorter"):
        trainer = Trainer(a.method, a.batches, a.recipe, a.run_dir, label="t")
        opt = trainer.optimizers["main"]
        opt.scheduler = None if scheduler is None else a.method.optimization(a.student.parameters(), trainer.plan,
                                                                               steps_per_epoch=3).scheduler
        with pytest.raises(ConfigError, match=r"^student\.infodrop\.finetune_epochs: the method's optimizer 'main' "
                                              r"does not follow the recipe's per-step schedule"):
            finetune_phase(a.student, trainer, "student.infodrop")
