"""The one training loop. It drives any `TrainMethod` and knows nothing of distillation.

Per epoch: the method's epoch hooks, its training steps over the training split, a reduction of the epoch's
sums across processes, validation (main metrics plus whatever `extra_metrics` adds, e.g. agreement with a
teacher), a checkpoint, callbacks. Batches of epoch e depend only on (seed, e), and checkpoints carry every
optimizer, schedule, the method's own state and all RNG state, so a resumed run ends with the same weights as
one that never stopped.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kdforge.data.loader import Batches
from kdforge.data.seeds import hash_seed
from kdforge.data.types import Split
from kdforge.engine.checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, save_checkpoint
from kdforge.engine.contract import Plan, StepContext, TrainMethod
from kdforge.engine.epoch_sums import add_to, epoch_means, fresh_sums, total_loss
from kdforge.engine.finite import DeferredFinite
from kdforge.engine.log import RunLogger, make_progress
from kdforge.engine.metrics import evaluate
from kdforge.engine.result import EpochCallback, ExtraMetrics, FitResult, Metrics
from kdforge.engine.runtime import Runtime
from kdforge.engine.seeding import rng_for_rank, rng_state, seed_everything, set_rng_state
from kdforge.engine.settings import Recipe
from kdforge.engine.stepping import Stepping
from kdforge.engine.syncbn import SyncState, enable_sync_batchnorm
from kdforge.errors import CheckpointError, ConfigError, TrainingDiverged

class Trainer:
    """Runs `recipe.train.epochs` epochs of `method.training_step` over the training split of `batches.data`.

    `batches` says how every split is batched (size, augmentation, recorded views); `extra_metrics` adds metrics to
    every evaluation (the API passes agreement with the teacher). Only the runtime's main process writes files.
    `tensorboard` and the progress bar (`recipe.train.progress`) can be turned off; neither changes the numbers.
    `recipe.train.precision` and `accumulate` are carried out by `engine.stepping.Stepping`.
    """

    def __init__(
        self,
        method: TrainMethod,
        batches: Batches,
        recipe: Recipe,
        run_dir: str | Path,
        *,
        eval_batch_size: int = 1000,
        label: str = "train",
        callbacks: Sequence[EpochCallback] = (),
        runtime: Runtime | None = None,
        extra_metrics: ExtraMetrics | None = None,
    ) -> None:
        self.method = method
        self.data = data = batches.data
        self.recipe = recipe
        self.cfg = recipe.train
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.eval_batch_size = eval_batch_size
        self.label = label
        self.callbacks = list(callbacks)
        self.extra_metrics = extra_metrics
        self.runtime = runtime or Runtime.from_env(self.cfg.device)
        rt = self.runtime
        self.loader = batches.loader("train", recipe.seed, rt.rank, rt.world_size)
        if len(self.loader) == 0:
            raise ConfigError(f"data.batch_size={batches.size} leaves no batch of {len(data.train)} training samples")
        self.stepping = Stepping(self.cfg.precision, self.cfg.accumulate, rt.device)
        if self.cfg.accumulate > 1 and not getattr(method, "accumulates", True):
            raise ConfigError(f"train.accumulate: {type(method).__name__} owns its training step (several phases or "
                              "its own gradient reduction) and cannot accumulate gradients; set it to 1")
        self.method.to(self.runtime.device)
        self.plan = Plan(recipe, self.cfg.epochs, len(self.loader), self.cfg.accumulate)
        self.optimizers = method.configure_optimizers(self.plan)
        self.ctx = StepContext(plan=self.plan, batches=batches, runtime=self.runtime, optimizers=self.optimizers,
                               run_dir=self.run_dir, stepping=self.stepping)
        rt.broadcast_(self.method.trainable().state_dict().values())  # as DDP does: every process starts alike
        self._sync = SyncState(rt)
        if self.cfg.sync_batchnorm and rt.distributed:
            enable_sync_batchnorm(self.method.trainable(), self._sync)
        self._position: tuple[int, int, int, int | None, dict[str, Any] | None] | None = None
        #: check the loss's finiteness where the loop syncs anyway rather than every step (see train_epoch)
        self.defer_finite_check = self.runtime.device.type != "cpu"
        self._finite = DeferredFinite(self.runtime.device)

    # ---- public -------------------------------------------------------------------------------------------
    def prepare(self, resume: bool = False, overwrite: bool = False) -> None:
        """Check the run folder and load the checkpoint to resume from, before anything is written: a folder that
        holds another run is refused here, so a caller may write its own files (config.yaml) only after this."""
        self._position = self._start(resume, overwrite)

    def fit(self, resume: bool = False, overwrite: bool = False) -> FitResult:
        """Train to the end (from a checkpoint when resuming). The caller holds the run folder's lock if it wants
        one (the API takes it once around a whole run: `kdforge.api.run_lock`)."""
        if self._position is None:
            self.prepare(resume, overwrite)
        return self._fit(*self._position)

    def _fit(self, start_epoch: int, start_batch: int, step: int, resumed: int | None,
             acc: dict[str, Any] | None) -> FitResult:
        logger = RunLogger(self.run_dir, tensorboard=self.cfg.tensorboard) if self.runtime.is_main else None
        self.ctx.logger = logger
        history: list[dict[str, Any]] = []
        val: Metrics | None = None  # the last epoch always validates; its metrics are the final ones
        t0 = time.perf_counter()
        try:
            with make_progress(self.cfg.progress and self.runtime.is_main) as progress:
                task = progress.add_task(self.label, total=self.plan.total_steps, completed=step, status="")
                for epoch in range(start_epoch, self.cfg.epochs):
                    record, step = self.train_epoch(epoch, step, logger, lambda: progress.advance(task),
                                                    start_batch=start_batch if epoch == start_epoch else 0,
                                                    acc=acc if epoch == start_epoch else None)
                    last = epoch + 1 == self.cfg.epochs
                    if (epoch + 1) % self.cfg.eval_every == 0 or last:
                        val = self._evaluate("val")
                        record.update({f"val_{k}": v for k, v in val.items()})
                        if self.cfg.eval_test:  # a test curve for analysis: a forward pass, no RNG drawn
                            record.update({f"test_{k}": v for k, v in self._evaluate("test").items()})
                        shown = f" val {val['top1']:.2%}" if "top1" in val else ""
                        progress.update(task, status=f"loss {record['loss']:.3f}{shown}")
                    if logger is not None:
                        logger.log("epoch", step, **record)
                    history.append(record)
                    if (epoch + 1) % self.cfg.checkpoint_every == 0 or last:
                        self._save(epoch, step)
                    for callback in self.callbacks:
                        callback(epoch, record)
            val = val if val is not None else self._evaluate("val")
            test = self._evaluate("test")
            if logger is not None:
                logger.log("final", step, **{f"val_{k}": v for k, v in val.items()},
                           **{f"test_{k}": v for k, v in test.items()})
        finally:
            if logger is not None:
                logger.close()
        return FitResult(val=val, test=test, epochs=self.cfg.epochs, steps=step,
                         wall_time_s=time.perf_counter() - t0, resumed_from=resumed, history=history)

    # ---- the hot loop -------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, step: int, logger: RunLogger | None,
                    advance: Callable[[], None] = lambda: None, start_batch: int = 0,
                    acc: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
        """One epoch from batch `start_batch` on; `acc` holds the epoch's running sums when it resumes mid-way
        (then `on_epoch_start` already ran before the checkpoint and is not run again)."""
        ctx, method = self.ctx, self.method
        ctx.epoch = epoch
        method.train()
        acc = acc or fresh_sums(self.runtime.device)
        if start_batch == 0:
            method.on_epoch_start(ctx)
        sums, counts, loss_names = acc["sums"], acc["counts"], acc["loss_names"]
        every = self.cfg.checkpoint_steps
        # Non-finite losses: on the CPU reading the flag costs nothing, so every step is checked at once; on an
        # accelerator a read would wait for the step, so the first bad step is kept on the device and read only
        # where the loop reads the device anyway (a logged step, a checkpoint, the end of the epoch).
        deferred = self._finite if self.defer_finite_check else None
        if deferred is not None:
            deferred.start(start_batch, step)
        save_due = False  # a mid-epoch checkpoint is due, taken at the next optimizer step (engine/stepping.py)
        for i, batch in enumerate(self.loader.epoch(epoch, start=start_batch), start=start_batch):
            ctx.step, ctx.batch_index = step, i
            ctx.grad_weight = len(batch) * self.runtime.world_size / self._global_batch(i)
            self._sync.grad_weight = ctx.grad_weight
            self.stepping.begin(i, len(self.loader), self._global_batch, len(batch), self.runtime.world_size)
            batch = batch.to(self.runtime.device)
            with self.stepping.autocast():
                out = method.training_step(batch, ctx)
            loss = total_loss(out.terms)
            if deferred is not None:
                deferred.add(loss)
            elif not torch.isfinite(loss):
                raise TrainingDiverged(self._diverged_message(out.terms, epoch, i, step))
            step += 1
            loss_names.update(dict.fromkeys(out.terms))
            for name, value in (*out.terms.items(), *out.metrics.items()):
                add_to(sums, name, value.detach())
                counts[name] = counts.get(name, 0) + 1
            if out.logits is not None and batch.y is not None:
                acc["correct"] += out.logits.detach().argmax(-1).eq(batch.y).sum()
                acc["labeled"] += batch.y.shape[0]
            advance()
            log_now = logger is not None and step % self.cfg.log_every == 0
            save_due = save_due or (every is not None and step % every == 0)
            save_now = save_due and self.stepping.last and i + 1 < self.plan.steps_per_epoch
            if deferred is not None and (log_now or save_now):
                self._raise_if_diverged(deferred, out.terms, epoch)
            if log_now:
                logger.log("step", step, epoch=epoch, loss=float(loss.detach()), lr=self._lr(),
                           **{k: float(v.detach()) for k, v in out.terms.items()})
            if save_now:
                save_due = False
                self._save(epoch, step, batch=i + 1, acc=acc)
        if deferred is not None and deferred.steps:
            self._raise_if_diverged(deferred, out.terms, epoch)
        method.on_epoch_end(ctx)
        self._sync_buffers()
        record: dict[str, Any] = {"epoch": epoch, **epoch_means(self.runtime, sums, counts, loss_names)}
        hits = self.runtime.all_reduce(torch.stack([acc["correct"], acc["labeled"]]))
        if int(hits[1]):
            record["train_top1"] = int(hits[0]) / int(hits[1])
        record["lr"] = self._lr()
        return record, step

    def _global_batch(self, i: int) -> int:
        """Samples in batch `i` over all processes."""
        return min(self.loader.batch_size, len(self.data.train) - i * self.loader.batch_size)

    def _sync_buffers(self) -> None:
        """Give every process the main process's buffers (BatchNorm statistics), as DDP's broadcast_buffers does,
        so that validation and checkpoints agree across processes."""
        self.runtime.broadcast_(self.method.trainable().buffers())

    def _lr(self) -> float:
        return next(iter(self.optimizers.values())).lr if self.optimizers else 0.0

    def _raise_if_diverged(self, deferred: DeferredFinite, terms: dict[str, Tensor], epoch: int) -> None:
        """TrainingDiverged naming the first step of this epoch whose loss was not finite, if there was one."""
        bad = deferred.first_bad()
        if bad is not None:
            raise TrainingDiverged(self._diverged_message(terms, epoch, *bad, latest=True))

    def _diverged_message(self, terms: dict[str, Tensor], epoch: int, i: int, step: int, latest: bool = False) -> str:
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        shown = f"{shown} (at the step it was found)" if latest else shown
        last = latest_checkpoint(self.ckpt_dir)
        kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint had been written yet"
        return (f"loss became non-finite at epoch {epoch}, batch {i + 1}/{len(self.loader)} (global step {step + 1}):"
                f" {shown}; {kept}; lower optim.lr, set train.grad_clip or lower the loss weights")

    # ---- evaluation ----------------------------------------------------------------------------------------
    def _evaluate(self, split: str) -> "Metrics":
        part: Split | None = getattr(self.data, split)
        if part is None:
            return Metrics(note=f"no {split} split was given, so there are no {split} metrics")
        self.method.before_validation(self.ctx)
        return Metrics(evaluate(self.method.eval_model(), part, self.eval_batch_size, self.runtime.device,
                                extra=None if self.extra_metrics is None else lambda lg: self.extra_metrics(split, lg)))

    # ---- state ---------------------------------------------------------------------------------------------
    def _start(self, resume: bool, overwrite: bool) -> tuple[int, int, int, int | None, dict[str, Any] | None]:
        """Where training starts: (epoch, batch within it, global step, resumed-from epoch, epoch sums).

        Loads the latest checkpoint when resuming; refuses to silently overwrite an earlier run's checkpoints."""
        latest = latest_checkpoint(self.ckpt_dir)
        if resume and latest is not None:
            return self._load(latest)
        if latest is not None and not overwrite and not resume:
            raise ConfigError(f"{self.run_dir} already holds checkpoints of a run: resume it (--resume, resume=True),"
                              " start again (--overwrite, overwrite=True), or choose another run folder"
                              " (output_dir, run_dir=)")
        if self.run_dir.exists() and overwrite and self.runtime.is_main:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / "tb", ignore_errors=True)
        self.runtime.barrier()
        # A stream distinct from model init, the same on every fresh start; one per process (dropout masks).
        rank = self.runtime.rank
        seed_everything(self.recipe.seed + 1 if rank == 0 else hash_seed(self.recipe.seed, f"rank{rank}") % 2**31)
        return 0, 0, 0, None, None

    def _save(self, epoch: int, step: int, batch: int | None = None, acc: dict[str, Any] | None = None) -> None:
        """A checkpoint at the end of `epoch` or, with `batch`, after that many of its batches (then the epoch's
        running sums `acc` are saved too, so the epoch's record comes out the same after a resume)."""
        if batch is not None:
            self._sync_buffers()
        rngs = self.runtime.gather_object(rng_state())
        if self.runtime.is_main:
            assert rngs is not None
            state = {"epoch": epoch, "batch": batch, "step": step, "rng": rngs[0], "rng_ranks": rngs[1:],
                     "method": self.method.extra_state(), "streams": dict(self.ctx.streams),
                     "optimizers": {n: o.optimizer.state_dict() for n, o in self.optimizers.items()},
                     "optimizer_types": {n: type(o.optimizer).__name__ for n, o in self.optimizers.items()},
                     "schedulers": {n: o.scheduler.state_dict() for n, o in self.optimizers.items()
                                    if o.scheduler is not None}}
            if acc is not None:
                state["epoch_acc"] = {**acc, "loss_names": list(acc["loss_names"])}
            if self.stepping.state_dict():
                state["stepping"] = self.stepping.state_dict()
            try:
                save_checkpoint(self.ckpt_dir, checkpoint_name(epoch, batch), self.method.trainable(), state)
            except OSError as e:  # disk full, quota, permissions: say so in one line, keep what was there
                last = latest_checkpoint(self.ckpt_dir)
                kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint had been written"
                raise CheckpointError(f"could not write a checkpoint to {self.ckpt_dir} ({e.strerror or e}); {kept};"
                                      " free space or choose another output folder, then --resume") from None
        self.runtime.barrier()

    def _restore_rng(self, state: dict[str, Any]) -> None:
        saved = rng_for_rank(state, self.runtime.rank)
        if saved is not None:
            set_rng_state(saved)
        else:
            seed_everything(hash_seed(self.recipe.seed, f"rank{self.runtime.rank}:{state['step']}") % 2**31)

    def _load(self, path: Path) -> tuple[int, int, int, int, dict[str, Any] | None]:
        ckpt = load_checkpoint(path)
        try:
            self.method.trainable().load_state_dict(ckpt.weights)
            types = {n: type(o.optimizer).__name__ for n, o in self.optimizers.items()}
            if ckpt.state.get("optimizer_types", types) != types:
                raise ValueError(f"optimizers {ckpt.state['optimizer_types']} were saved, this run has {types}")
            for name, opt in self.optimizers.items():
                opt.optimizer.load_state_dict(ckpt.state["optimizers"][name])
                if opt.scheduler is not None:
                    opt.scheduler.load_state_dict(ckpt.state["schedulers"][name])
            self.method.load_extra_state(ckpt.state.get("method", {}))
            self.stepping.load_state_dict(ckpt.state.get("stepping", {}))
            self.ctx.restore_streams(ckpt.state.get("streams", {}))
            self._restore_rng(ckpt.state)
            epoch, step, batch = int(ckpt.state["epoch"]), int(ckpt.state["step"]), ckpt.state.get("batch")
            acc = ckpt.state.get("epoch_acc")
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path} does not fit this run ({_first_line(err)}): the model, method or "
                                  "optimizers changed since it was written; start again with --overwrite or "
                                  "use another output_dir") from None
        if batch is None:
            return epoch + 1, 0, step, epoch, None
        acc = {**acc, "loss_names": dict.fromkeys(acc["loss_names"])}
        return epoch, int(batch), step, epoch, acc


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
