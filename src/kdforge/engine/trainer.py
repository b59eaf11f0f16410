"""The one training loop: trains a model alone or distills into it, through the Distiller contract."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdforge.config.schema import AugmentConfig, RecipeConfig
from kdforge.data import BatchIterator, DataBundle
from kdforge.distillers.base import Distiller
from kdforge.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kdforge.engine.log import RunLogger, make_progress
from kdforge.engine.metrics import evaluate, predict
from kdforge.engine.optim import build_optimizer, build_scheduler
from kdforge.engine.seeding import rng_state, seed_everything, set_rng_state
from kdforge.errors import ConfigError, TrainingDiverged

EpochCallback = Callable[[int, dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class FitResult:
    val: dict[str, float]
    test: dict[str, float]
    epochs: int
    steps: int
    wall_time_s: float
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs `recipe.train.epochs` epochs of `distiller.forward_train` over the training split.

    The engine sums the named loss terms, steps the optimizer and the per-step schedule, evaluates every
    `eval_every` epochs, checkpoints every `checkpoint_every` epochs and stops on a non-finite loss.
    Batches of epoch e depend only on (seed, e), and checkpoints carry all RNG state, so a resumed run ends
    with the same weights as one that never stopped.
    """

    def __init__(
        self,
        distiller: Distiller,
        data: DataBundle,
        recipe: RecipeConfig,
        run_dir: str | Path,
        batch_size: int,
        eval_batch_size: int = 1000,
        augment: AugmentConfig = AugmentConfig(),
        label: str = "train",
        callbacks: Sequence[EpochCallback] = (),
    ) -> None:
        self.distiller = distiller
        self.data = data
        self.recipe = recipe
        self.cfg = recipe.train
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.eval_batch_size = eval_batch_size
        self.label = label
        self.callbacks = list(callbacks)
        self.device = resolve_device(self.cfg.device)
        self.loader = BatchIterator(data.train, batch_size, data.spec.num_classes, augment, seed=recipe.seed)
        if len(self.loader) == 0:
            raise ConfigError(f"data.batch_size={batch_size} leaves no batch of {len(data.train)} training samples")
        self.distiller.to(self.device)
        self.trainable = distiller.trainable()
        self.optimizer = build_optimizer(self.trainable.parameters(), recipe.optim)
        self.scheduler = build_scheduler(self.optimizer, recipe.schedule, self.cfg.epochs, len(self.loader))

    # ---- public -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> FitResult:
        start_epoch, step, resumed = self._start(resume, overwrite)
        teacher_val, teacher_test = self._teacher_logits()
        logger = RunLogger(self.run_dir)
        history: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        try:
            with make_progress(self.cfg.progress) as progress:
                task = progress.add_task(self.label, total=self.cfg.epochs * len(self.loader),
                                         completed=start_epoch * len(self.loader), status="")
                for epoch in range(start_epoch, self.cfg.epochs):
                    record, step = self.train_epoch(epoch, step, logger, progress, task)
                    if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs:
                        val = evaluate(self.distiller.student, self.data.val, self.eval_batch_size, self.device,
                                       teacher_val)
                        record.update({f"val_{k}": v for k, v in val.items()})
                        progress.update(task, status=f"loss {record['loss']:.3f} val {val['top1']:.2%}")
                    logger.log("epoch", step, **record)
                    history.append(record)
                    if (epoch + 1) % self.cfg.checkpoint_every == 0 or epoch + 1 == self.cfg.epochs:
                        self._save(epoch, step)
                    for callback in self.callbacks:
                        callback(epoch, record)
            val = evaluate(self.distiller.student, self.data.val, self.eval_batch_size, self.device, teacher_val)
            test = evaluate(self.distiller.student, self.data.test, self.eval_batch_size, self.device, teacher_test)
            logger.log("final", step, **{f"val_{k}": v for k, v in val.items()},
                       **{f"test_{k}": v for k, v in test.items()})
        finally:
            logger.close()
        return FitResult(val=val, test=test, epochs=self.cfg.epochs, steps=step,
                         wall_time_s=time.perf_counter() - t0, resumed_from=resumed, history=history)

    # ---- the hot loop -------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, step: int, logger: RunLogger, progress: Any, task: Any) -> tuple[dict, int]:
        self.distiller.train()
        sums: dict[str, Tensor] = {}
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        for i, batch in enumerate(self.loader.epoch(epoch)):
            batch = batch.to(self.device)
            logits, losses = self.distiller.forward_train(batch)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainingDiverged(self._diverged_message(losses, epoch, i, step))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.trainable.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            step += 1
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.detach()
            correct += logits.detach().argmax(-1).eq(batch.y).sum()
            seen += batch.y.shape[0]
            progress.advance(task)
            if step % self.cfg.log_every == 0:
                logger.log("step", step, epoch=epoch, loss=float(loss.detach()), lr=self.scheduler.get_last_lr()[0],
                           **{k: float(v.detach()) for k, v in losses.items()})
        n = i + 1
        terms = {k: float(v) / n for k, v in sums.items()}
        return {"epoch": epoch, "loss": sum(terms.values()), **terms, "train_top1": int(correct) / seen,
                "lr": self.scheduler.get_last_lr()[0]}, step

    def _diverged_message(self, losses: dict[str, Tensor], epoch: int, i: int, step: int) -> str:
        terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        last = latest_checkpoint(self.ckpt_dir)
        kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint had been written yet"
        return (f"loss became non-finite at epoch {epoch}, batch {i + 1}/{len(self.loader)} (global step {step + 1}):"
                f" {terms}; {kept}; lower optim.lr, set train.grad_clip or lower the loss weights")

    # ---- state ---------------------------------------------------------------------------------------------
    def _start(self, resume: bool, overwrite: bool) -> tuple[int, int, int | None]:
        """Load the latest checkpoint when resuming; refuse to silently overwrite an earlier run's checkpoints."""
        latest = latest_checkpoint(self.ckpt_dir)
        if resume and latest is not None:
            return self._load(latest)
        if latest is not None and not overwrite and not resume:
            raise ConfigError(f"{self.run_dir} already holds checkpoints of a run: pass --resume to continue it,"
                              " --overwrite to start again, or set output_dir")
        if self.run_dir.exists() and overwrite:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / "tb", ignore_errors=True)
        seed_everything(self.recipe.seed + 1)  # distinct stream from model init, same on every fresh start
        return 0, 0, None

    def _save(self, epoch: int, step: int) -> None:
        state = {"epoch": epoch, "step": step, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state()}
        save_checkpoint(self.ckpt_dir, epoch, self.trainable, state)

    def _load(self, path: Path) -> tuple[int, int, int]:
        ckpt = load_checkpoint(path)
        self.trainable.load_state_dict(ckpt.weights)
        self.optimizer.load_state_dict(ckpt.state["optimizer"])
        self.scheduler.load_state_dict(ckpt.state["scheduler"])
        set_rng_state(ckpt.state["rng"])
        epoch = int(ckpt.state["epoch"])
        return epoch + 1, int(ckpt.state["step"]), epoch

    def _teacher_logits(self) -> tuple[Tensor | None, Tensor | None]:
        """Teacher logits on val and test, computed once per run for the agreement metrics."""
        teacher = self.distiller.teacher
        if not isinstance(teacher, nn.Module):
            return None, None
        return (predict(teacher, self.data.val, self.eval_batch_size, self.device),
                predict(teacher, self.data.test, self.eval_batch_size, self.device))
