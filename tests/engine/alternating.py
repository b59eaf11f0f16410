"""A test method that uses the whole contract: two optimizers with their own schedules, alternating phases, a
batch drawn from another split, epoch hooks and extra state. Not registered (the registry holds shipped methods
only); tests build it directly."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import AugmentSettings, Batch, Batches
from kdforge.engine import Optimization, Plan, StepContext, StepOutput, Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe, ScheduleSettings
from kdforge.methods import Method, MethodParams, Setup
from kdforge.models import ModelSpec


class Alternating(Method):
    """Even steps: the student on CE plus a learned per-class weighting of its loss. Odd steps: the weighting
    (its own Adam optimizer, its own schedule over half the steps) on a batch of the validation split."""

    needs_teacher = False

    def __init__(self, student: nn.Module, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, None, params, setup)
        self.class_logit = nn.Parameter(torch.zeros(setup.spec.num_classes))
        self.register_buffer("seen", torch.zeros(setup.spec.num_classes))
        self.phases: list[str] = []  # python state, kept in extra_state
        self.epochs_started = 0

    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        weights = torch.optim.Adam([self.class_logit], lr=0.05)
        half = (plan.steps_per_epoch + 1) // 2
        return {"student": self.optimization(self.student.parameters(), plan),
                "weights": Optimization(weights, torch.optim.lr_scheduler.StepLR(weights, step_size=half, gamma=0.7))}

    def on_epoch_start(self, ctx: StepContext) -> None:
        self.epochs_started += 1

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        weights = 2 * torch.sigmoid(self.class_logit)
        if ctx.batch_index % 2 == 0:
            self.phases.append("s")
            logits = batch.forward(self.student)
            loss = (F.cross_entropy(logits, batch.y, reduction="none") * weights.detach()[batch.y]).mean()
            self.seen += torch.bincount(batch.y, minlength=self.seen.numel())
            ctx.optimize(loss, ["student"])
            return StepOutput(terms={"ce": loss}, logits=logits)
        self.phases.append("w")
        val = ctx.next_batch("val")  # an endless stream whose position the engine checkpoints
        with torch.no_grad():
            val_logits = val.forward(self.student)
        loss = (F.cross_entropy(val_logits, val.y, reduction="none") * weights[val.y]).mean() + weights.var()
        ctx.optimize(loss, ["weights"])
        return StepOutput(terms={}, metrics={"weight_loss": loss.detach()})

    def extra_state(self) -> dict[str, Any]:
        return {"phases": "".join(self.phases), "epochs_started": self.epochs_started}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.phases = list(state["phases"])
        self.epochs_started = int(state["epochs_started"])


def trainer(run_dir: str, epochs: int = 4, callbacks: tuple = (), checkpoint_steps: int | None = None) -> Trainer:
    """The same trainer in any process: digits, an MLP with dropout, mixup and flip on (RNG streams in use)."""

    bundle = build_data(DataConfig(name="digits"))
    seed_everything(0)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [32], "dropout": 0.2}), bundle.spec)
    method = Alternating(student, MethodParams(), Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(seed=0, optim=OptimSettings(name="sgd", lr=0.05), schedule=ScheduleSettings(name="cosine"),
                    train=LoopSettings(epochs=epochs, progress=False, tensorboard=False,
                                            checkpoint_steps=checkpoint_steps))
    return Trainer(method, Batches(bundle, 64, AugmentSettings(mixup_alpha=0.3)), recipe, run_dir,
                   callbacks=callbacks)


if __name__ == "__main__":  # python alternating.py RUN_DIR EPOCHS [--resume] [--slow] [--every N]: a new process
    import sys
    import time

    slow = (lambda epoch, record: time.sleep(0.3),) if "--slow" in sys.argv else ()
    every = int(sys.argv[sys.argv.index("--every") + 1]) if "--every" in sys.argv else None
    t = trainer(sys.argv[1], int(sys.argv[2]), callbacks=slow, checkpoint_steps=every)
    t.fit(resume="--resume" in sys.argv)
    torch.save({k: v.clone() for k, v in t.method.trainable().state_dict().items()}, f"{sys.argv[1]}/final.pt")
