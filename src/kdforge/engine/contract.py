"""What the engine asks of a method, and what it gives the method in return.

The engine never imports a method or a loss: it drives any object shaped like `TrainMethod`. Simple methods
inherit `kdforge.methods.Method`, return named loss terms and let `StepContext.optimize` do backward, clipping
and the optimizer and schedule steps. A method may instead own the whole step (several optimizers, inner
unrolled updates, alternating phases) through the same context, and keep state of its own (memory banks,
learned losses, pseudo-label sets) in `extra_state`, which checkpoints carry so that resume stays bit-exact.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from kdforge.data.augment import AugmentSettings
from kdforge.data.loader import Batches, BatchIterator
from kdforge.data.types import Batch, DataBundle
from kdforge.engine.runtime import Runtime
from kdforge.engine.settings import Recipe
from kdforge.engine.stepping import Stepping
from kdforge.fileio import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from kdforge.engine.log import RunLogger


@dataclass
class Optimization:
    """One optimizer, its per-step schedule (or None) and the gradient-norm clip applied before its step."""

    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None = None
    grad_clip: float | None = None

    def parameters(self) -> Iterator[nn.Parameter]:
        for group in self.optimizer.param_groups:
            yield from group["params"]

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        """Clip, step, advance the schedule; under fp16 through `scaler` (gradients unscaled before clipping)."""
        if scaler is not None and self.grad_clip is not None:
            scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(list(self.parameters()), self.grad_clip)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


@dataclass(frozen=True)
class Plan:
    """How long the run is: what `configure_optimizers` needs to build per-step schedules. `steps_per_epoch` counts
    training batches (`ctx.step` does too); with gradient accumulation over `accumulate` of them the optimizers
    step `optimizer_steps_per_epoch` times an epoch, which is what schedules count."""

    recipe: Recipe
    epochs: int
    steps_per_epoch: int
    accumulate: int = 1

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def optimizer_steps_per_epoch(self) -> int:
        return -(-self.steps_per_epoch // self.accumulate)


@dataclass
class StepOutput:
    """What one training step reports. `terms` are the weighted loss terms (their sum is logged as `loss`);
    `logits` the student's outputs on the batch (for train accuracy, when the batch has hard labels);
    `metrics` any other per-step scalars to average over the epoch (never summed into the loss)."""

    terms: dict[str, Tensor]
    logits: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class StepContext:
    """The engine's side of a step: where the run is, the data and how it is batched, the runtime, the logger and
    the optimizers."""

    plan: Plan
    batches: Batches
    runtime: Runtime
    optimizers: dict[str, Optimization]
    logger: "RunLogger | None" = None
    run_dir: Path | None = None  # where `save_artifact` writes (None: nowhere, e.g. a context built by hand)
    epoch: int = 0
    step: int = 0  # optimizer-independent global step: training batches completed before this one
    batch_index: int = 0  # position of the current batch in its epoch
    # This process's share of the global batch times the number of processes (1.0 with equal shares): gradients
    # are averaged with these weights, so N processes step exactly as one process on the whole batch would.
    grad_weight: float = 1.0
    stepping: Stepping = field(default_factory=Stepping)  # precision and gradient accumulation (engine/stepping)
    _loaders: dict[str, BatchIterator] = field(default_factory=dict, repr=False)
    streams: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (pass, next batch); checkpointed
    _iters: dict[str, Iterator[Batch]] = field(default_factory=dict, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.plan.total_steps

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def data(self) -> DataBundle:
        """Every split of the run's data (validation, unlabeled, test)."""
        return self.batches.data

    @property
    def augment(self) -> AugmentSettings:
        return self.batches.augment

    @property
    def batch_size(self) -> int:
        return self.batches.size

    def optimize(self, loss: Tensor, names: Iterable[str] | None = None) -> None:
        """Zero the named optimizers' gradients (all by default), backpropagate `loss`, average the gradients over
        processes (under torchrun), clip, step each one and its schedule. Methods with several optimizers call
        this once per phase with the phase's names; a method that steps by itself calls
        `runtime.average_gradients` the same way. Under gradient accumulation (`stepping`) the gradients are
        zeroed at a group's first micro-batch only and the rest happens at its last."""
        chosen = [self.optimizers[n] for n in (names if names is not None else self.optimizers)]
        if self.stepping.first:
            for opt in chosen:
                opt.optimizer.zero_grad(set_to_none=True)
        self.stepping.backward(loss)
        if not self.stepping.last:
            return
        if self.runtime.distributed:
            self.runtime.average_gradients([p for opt in chosen for p in opt.parameters()],
                                           self.stepping.reduce_weight(self.grad_weight))
        self.stepping.step(chosen)

    def loader(self, split: str) -> BatchIterator:
        """Batches of another split (e.g. `unlabeled`) with the run's batch size, augmentation and seed; its
        epoch e depends on (seed, split, e) only, so a method that draws from it still resumes exactly."""
        if split not in self._loaders:
            self._loaders[split] = self.batches.loader(split, self.recipe.seed, self.runtime.rank,
                                                       self.runtime.world_size)
        return self._loaders[split]

    def next_batch(self, split: str) -> Batch:
        """The next batch of an endless, seeded stream over `split` (e.g. validation batches for a meta step, or
        unlabeled ones), on the run's device. The engine checkpoints each stream's position, so a run resumed
        anywhere, mid-epoch included, draws the same batches as one that never stopped."""
        loader = self.loader(split)
        n_pass, pos = self.streams.get(split, (0, 0))
        if pos >= len(loader):
            n_pass, pos = n_pass + 1, 0
            self._iters.pop(split, None)
        if split not in self._iters:
            self._iters[split] = loader.epoch(n_pass, start=pos)
        batch = next(self._iters[split])
        self.streams[split] = (n_pass, pos + 1)
        return batch.to(self.runtime.device)

    def restore_streams(self, streams: dict[str, Any]) -> None:
        self.streams = {k: (int(v[0]), int(v[1])) for k, v in streams.items()}
        self._iters.clear()

    def log(self, **values: float) -> None:
        """Extra scalars of the method, written beside the engine's step records (main process only)."""
        if self.logger is not None:
            self.logger.log("method", self.step, epoch=self.epoch, **values)

    def save_artifact(self, name: str, data: str | bytes) -> Path | None:
        """Write `data` as the file `name` in the run folder, atomically, on the main process only: what a method
        produces besides its weights (DFA's derived aggregation). Returns the file, or None where nothing was
        written (another process, or no run folder)."""
        if self.run_dir is None or not self.runtime.is_main:
            return None
        path = self.run_dir / name
        if isinstance(data, bytes):
            return atomic_write(path, lambda tmp: tmp.write_bytes(data))
        return atomic_write_text(path, data)


@runtime_checkable
class TrainMethod(Protocol):
    """What the engine drives. `kdforge.methods.Method` implements every hook with a sensible default."""

    def to(self, device: torch.device) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]: ...
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput: ...
    def on_epoch_start(self, ctx: StepContext) -> None: ...
    def on_epoch_end(self, ctx: StepContext) -> None: ...
    def before_validation(self, ctx: StepContext) -> None: ...
    def trainable(self) -> nn.Module: ...
    def eval_model(self) -> nn.Module: ...
    def extra_state(self) -> dict[str, Any]: ...
    def load_extra_state(self, state: dict[str, Any]) -> None: ...
