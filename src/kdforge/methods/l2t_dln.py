"""L2T-DLN (Hai et al., "L2T-DLN: Learning to Teach with Dynamic Loss Network", NeurIPS 2023): the student is
trained on a loss computed by a small network (the dynamic loss network, DLN) over the 1-vs-1 transformation of
its outputs and labels; a teacher, a coordinate-wise LSTM, updates the DLN's weights from the gradient of a
validation loss taken through K unrolled student steps (`kdforge.meta.unroll`).

One training step is one pass of main.py's validation-batch loop (1017137588qqcom/L2T-DLN@6ff1876, file:line):
1. K = 15 train batches of 25 (`main.py:186-194`) and one validation batch of 100 (`main.py:177, 181`);
2. K differentiable SGD steps (lr 0.1, no momentum) of the student on the DLN loss; CE on the validation batch;
3. g = d(val CE)/d(DLN weights), detached; DLN' = DLN - 1e-3 * LSTM(preprocess(g)), the LSTM's memory carried
   from step to step, detached between steps (`main.py:221-240, 259-260`);
4. the SAME K steps are unrolled again from the SAME start with DLN'; the validation CE after them trains the
   LSTM (Adam 1e-3, its gradient flowing LSTM -> DLN' -> the K student steps; `main.py:243-254`);
5. the student keeps the result of the second unroll, the DLN keeps DLN' (`main.py:256-267`).

Data (`loop: official`, the default): main.py splits CIFAR's training set 50/50 with a fresh `random_split` at
every outer loop and rebuilds both loaders (`main.py:90, 173-179`); an outer loop is one pass over the validation
half, and the train iterator restarts when the train half runs out, losing that inner slot (`main.py:189-192`:
`next(triter, True)` then `continue`, so that step has K - 1 inner steps). kdforge pools the run's train and val
splits and re-splits them, at the run's train/val sizes, at every outer loop (`ResplitStream`); the run's own
training batches only count steps, so `data.batch_size = val_batch` with equal halves makes one epoch one outer
loop. `loop: fixed` is kdforge's earlier loop, kept to replay runs made with it: the split drawn once, the run's
batch cut into K inner batches, validation batches of the run's batch size from the fixed val split.

Initialisation (`dln_init: official`, the default): `MetaLinear.__init__` (meta_module.py:105-109) builds an
nn.Linear (its default init draws, then is overwritten) and registers `kaiming_normal_(weight, mode='fan_out',
nonlinearity='leaky_relu')` with the default a = 0, i.e. std sqrt(2 / fan_out): ~0.224 for the 40-wide layers,
~1.41 for the 40 -> 1 head (the gain is ReLU's although the net uses LeakyReLU(0.01), DLN_LSTM.py:25). Here each
layer is built and re-initialised in the same order, so a seed gives the official weights. `MetaOptimizer.
init_weight` (DLN_LSTM.py:33-36) is a no-op: no submodule is an nn.Linear. The LSTM keeps PyTorch's LSTMCell
init, as the official code does (`# self.init_weight()`, DLN_LSTM.py:91). `dln_init: torch_default` is
nn.Linear's default (std 1/sqrt(3 fan_in)), what kdforge used before: ~1/200 of the official loss and gradient.

Logged: the DLN on a 5 x 5 grid of (true-class, other-class) scores (`ctx.log` at the start and after every epoch,
keys dln_tXXX_oYYY in thousandths, with the last step's logit statistics as last_*); per step, the inner batches'
mean true / other-class logits and sigmoid scores, their accuracy and the number of inner steps.

Deviations from 1017137588qqcom/L2T-DLN@6ff1876 (loop official, dln_init official):
- the pool is the run's train + val splits (main.py:39, 88-90 splits all 50k CIFAR training images); the run's val
  metrics are then on rows the student also trains on: report test metrics (main.py reports only the test set);
- splits, shuffles and augmentation come from generators seeded by (seed, outer loop, pass), not the global RNG
  (main.py:90, 176-177), which main.py also advances by rebuilding the DLN every step (main.py:256-258);
- BatchNorm statistics: the student keeps the second unroll's running statistics; the official student never
  does: higher copies buffers into its patched module (facebookresearch/higher@2383f2f:higher/patch.py
  `monkeypatch`, `buffer_sync`) and main.py:265-267 copies back parameters only (utils.py:28-42), so its
  eval-mode test (main.py:270-282) uses the initial statistics; training steps use batch statistics in both;
- no test evaluation after every step (main.py:270-286); validation every `train.eval_every` epochs instead;
- the length is train.epochs x steps per epoch, not outer_loop = 10 passes (main.py:29, 173); one process only.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from kdforge.data import AugmentSettings, Batch, BatchIterator, DataBundle, Split
from kdforge.data.seeds import hash_seed
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput
from kdforge.errors import ConfigError
from kdforge.losses.l2t_dln import dln_loss, logit_stats, loss_network, preprocess_gradients
from kdforge.meta import unroll
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.methods.checks import require_validation
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource

#: Scores at which the learned loss is logged (a 5 x 5 grid of (true-class, other-class) sigmoid scores).
GRID = (0.05, 0.275, 0.5, 0.725, 0.95)


class L2TDLNParams(MethodParams):
    # Defaults are the official main.py / DLN_LSTM.py settings.
    inner_steps: int = Field(15, ge=1, description="K: unrolled student steps per teacher update")
    inner_lr: float = Field(0.1, gt=0, description="the student's SGD rate in the unrolled steps (no momentum)")
    teacher_lr: float = Field(1e-3, gt=0, description="Adam rate of the LSTM teacher")
    update_scale: float = Field(1e-3, gt=0, description="DLN' = DLN - update_scale * LSTM output")
    dln_width: int = Field(40, ge=1, description="width of the loss network's hidden layers")
    dln_layers: int = Field(4, ge=1, description="hidden layers of the loss network (4 -> 40 x 4 -> 1)")
    lstm_hidden: int = Field(64, ge=1, description="hidden size of the teacher's first three LSTM cells")
    preproc_factor: float = Field(10.0, gt=0, description="p of the gradient preprocessing")
    dln_init: Literal["official", "torch_default"] = Field(
        "official", description="loss-network init: the official kaiming_normal_(fan_out), or nn.Linear's default "
                                "(kdforge's earlier init, for replaying old runs)")
    loop: Literal["official", "fixed"] = Field(
        "official", description="official: train/val re-split every outer loop, batches of inner_batch and "
                                "val_batch; fixed: kdforge's earlier loop (data.batch_size cut into K parts)")
    inner_batch: int = Field(25, ge=1, description="loop official: samples per inner step (train_batchsize)")
    val_batch: int = Field(100, ge=1, description="loop official: samples per validation batch (val_batchsize)")

    @model_validator(mode="after")
    def _sizes_belong_to_the_official_loop(self) -> "L2TDLNParams":
        if self.loop == "fixed" and {"inner_batch", "val_batch"} & self.model_fields_set:
            raise ValueError("inner_batch and val_batch size the batches of loop 'official'; loop 'fixed' cuts "
                             "data.batch_size into inner_steps parts and validates on batches of data.batch_size")
        return self


class LossNetwork(nn.Module):
    """The DLN: bias-free linear layers 4 -> width x layers -> 1 (LeakyReLU between them, applied functionally by
    `losses.loss_network`). `init` "official": each layer built, then re-drawn as MetaLinear does
    (meta_module.py:105-108), in the official order; "torch_default": nn.Linear's default."""

    def __init__(self, width: int, layers: int, init: str = "official") -> None:
        super().__init__()
        sizes = [4] + [width] * layers + [1]
        self.layers = nn.ModuleList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            layer = nn.Linear(a, b, bias=False)
            if init == "official":
                nn.init.kaiming_normal_(layer.weight.data, mode="fan_out", nonlinearity="leaky_relu")
            self.layers.append(layer)

    def weights(self) -> list[Tensor]:
        return [layer.weight for layer in self.layers]


class LSTMTeacher(nn.Module):
    """Coordinate-wise LSTM optimizer (official `LSTMOptimizer`): four stacked cells 2 -> h -> h -> h -> 1 applied
    to every DLN weight as a batch row, its output the update of that weight."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        sizes = [2, hidden, hidden, hidden, 1]
        self.cells = nn.ModuleList(nn.LSTMCell(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def state_sizes(self) -> list[int]:
        return [cell.hidden_size for cell in self.cells]

    def forward(self, x: Tensor, hidden: list[Tensor], cell: list[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        new_h, new_c = [], []
        for lstm, h, c in zip(self.cells, hidden, cell):
            x, c = lstm(x, (h, c))
            new_h.append(x)
            new_c.append(c)
        return x, new_h, new_c


def inner_batches(batch: Batch, k: int) -> list[Batch]:
    """The batch cut into k contiguous parts of (nearly) equal size, each a batch of its own (a graph batch keeps
    the whole graph and splits its selected nodes)."""
    parts = []
    for rows in torch.arange(len(batch), device=batch.index.device).tensor_split(k):
        pick = lambda t: None if t is None else t.index_select(0, rows)  # noqa: E731
        graph = batch.select is not None  # a graph's inputs are the whole graph's; other inputs are per sample
        x, extra = (batch.x, batch.extra) if graph else (pick(batch.x), tuple(pick(t) for t in batch.extra))
        parts.append(Batch(x=x, y=pick(batch.y), index=pick(batch.index), extra=extra, select=pick(batch.select),
                           split=batch.split, named={k: pick(t) for k, t in batch.named.items()},
                           calling=batch.calling))
    return parts


@dataclass
class Position:
    """Where the official loop stands: outer loop, next validation batch, train pass and next train batch."""

    outer: int = 0
    val: int = 0
    train_pass: int = 0
    train: int = 0


class ResplitStream:
    """main.py's data loop: at every outer loop a fresh random split of `pool` into a train part of `n_train` rows
    and a validation part of the rest, each shuffled; a step takes the next validation batch and the next k train
    batches, starting a new pass over the train part when it runs out and losing that slot, as main.py:189-192
    does. Every draw is a function of (seed, outer loop, pass), so the `Position` alone resumes it exactly."""

    def __init__(self, pool: Split, n_train: int, sizes: tuple[int, int], num_classes: int, augment: AugmentSettings,
                 seed: int) -> None:
        self.pool, self.n_train, self.sizes = pool, n_train, sizes
        self.num_classes, self.augment, self.seed = num_classes, augment, seed
        self.pos = Position()
        self._loaders: tuple[int, BatchIterator, BatchIterator] | None = None
        self._iters: dict[str, Iterator[Batch]] = {}

    def restore(self, pos: Position) -> None:
        self.pos, self._iters = pos, {}

    def _split(self, outer: int) -> tuple[BatchIterator, BatchIterator]:
        if self._loaders is None or self._loaders[0] != outer:
            gen = torch.Generator().manual_seed(hash_seed(self.seed, f"l2t_dln.split:{outer}"))
            order = torch.randperm(len(self.pool), generator=gen)
            make = lambda rows, size, part: BatchIterator(  # noqa: E731
                self.pool.take(rows), size, self.num_classes, self.augment, name=part,
                seed=hash_seed(self.seed, f"l2t_dln.{part}:{outer}"))
            self._loaders = (outer, make(order[:self.n_train], self.sizes[0], "train"),
                             make(order[self.n_train:], self.sizes[1], "val"))
        return self._loaders[1], self._loaders[2]

    def next(self, k: int) -> tuple[list[Batch], Batch]:
        """(the step's train batches: k, one fewer when the train part runs out; its validation batch)."""
        p = self.pos
        if p.val >= len(self._split(p.outer)[1]):  # the validation half is used up: next outer loop
            self.restore(Position(outer=p.outer + 1))
            p = self.pos
        train, val = self._split(p.outer)
        if "val" not in self._iters:
            self._iters["val"] = val.epoch(0, start=p.val)
        val_batch = next(self._iters["val"])
        p.val += 1
        parts = []
        for _ in range(k):
            if p.train >= len(train):  # main.py:189-192: restart the train loader and skip this slot
                p.train_pass, p.train = p.train_pass + 1, 0
                self._iters.pop("train", None)
                continue
            if "train" not in self._iters:
                self._iters["train"] = train.epoch(p.train_pass, start=p.train)
            parts.append(next(self._iters["train"]))
            p.train += 1
        return parts, val_batch


@METHODS.register("l2t_dln")
class L2TDLN(Method[L2TDLNParams]):
    """Owns its step: K unrolled student steps on the learned loss, the LSTM teacher's update of the loss, a
    re-unroll; the student, the DLN, the LSTM, its memory and its Adam state are all checkpointed, and the
    official loop's data position is in `extra_state`."""
    accumulates: ClassVar[bool] = False  # phases of its own step: no gradient accumulation
    needs_teacher: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        p = self.params
        self.loss_net = LossNetwork(p.dln_width, p.dln_layers, p.dln_init)
        self.lstm = LSTMTeacher(p.lstm_hidden)
        n = sum(w.numel() for w in self.loss_net.weights())
        for i, size in enumerate(self.lstm.state_sizes()):  # the teacher's memory, one row per DLN weight
            self.register_buffer(f"lstm_h{i}", torch.zeros(n, size))
            self.register_buffer(f"lstm_c{i}", torch.zeros(n, size))
        self._stream: ResplitStream | None = None
        self._position = Position()
        self._last_stats: dict[str, float] = {}

    @classmethod
    def check_data(cls, params: MethodParams, data: DataBundle) -> None:
        require_validation(data, 1, "the loss network of method 'l2t_dln' (its teacher's objective)")

    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        # The student moves only through the unrolled SGD steps; the DLN only through the LSTM's output.
        return {"teacher": Optimization(torch.optim.Adam(self.lstm.parameters(), lr=self.params.teacher_lr))}

    def extra_state(self) -> dict[str, Any]:
        return {"position": asdict(self._position)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._position = Position(**state.get("position", {}))
        if self._stream is not None:
            self._stream.restore(self._position)

    def _memory(self, kind: str) -> list[Tensor]:
        return [getattr(self, f"lstm_{kind}{i}") for i in range(len(self.lstm.cells))]

    def _unroll(self, parts: list[Batch], weights: list[Tensor], logits: list[Tensor]):
        start = {n: q.detach().requires_grad_() for n, q in self.student.named_parameters() if q.requires_grad}

        def inner(forward, k: int) -> Tensor:
            out = parts[k].forward(forward)  # type: ignore[arg-type]  (any callable model works)
            logits.append(out.detach())
            return dln_loss(out, parts[k].y, weights)  # type: ignore[arg-type]

        return unroll(self.student, inner, len(parts), self.params.inner_lr, params=start)

    def _data(self, batch: Batch, ctx: StepContext) -> tuple[list[Batch], Batch]:
        """The step's inner batches and validation batch, by the chosen loop."""
        if self.params.loop == "fixed":
            if len(batch) < self.params.inner_steps:
                raise ConfigError(f"method l2t_dln: a batch of {len(batch)} cannot be cut into inner_steps="
                                  f"{self.params.inner_steps} parts; raise data.batch_size (K * inner batch)")
            return inner_batches(batch, self.params.inner_steps), ctx.next_batch("val")
        if self._stream is None:
            train, val = ctx.data.train, ctx.data.split("val")
            pool = Split(torch.cat([train.x, val.x]), torch.cat([train.y, val.y]), graph=train.graph)  # type: ignore[list-item]
            self._stream = ResplitStream(pool, len(train), (self.params.inner_batch, self.params.val_batch),
                                         ctx.data.spec.num_classes, ctx.augment, ctx.recipe.seed)
            self._stream.restore(self._position)
        parts, val_batch = self._stream.next(self.params.inner_steps)
        self._position = self._stream.pos
        device = ctx.runtime.device
        return [part.to(device) for part in parts], val_batch.to(device)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        if batch.target is not None or batch.y is None:
            raise ConfigError("method l2t_dln: the learned loss needs hard labels; set data.augment.mixup_alpha and "
                              "cutmix_alpha to 0 and train on labeled data")
        if ctx.runtime.distributed:
            raise ConfigError("method l2t_dln runs in one process only; launch it without torchrun")
        parts, val = self._data(batch, ctx)
        weights = [w.detach().requires_grad_() for w in self.loss_net.weights()]
        first = self._unroll(parts, weights, [])
        val_before = F.cross_entropy(val.forward(first.forward), val.y)  # type: ignore[arg-type]
        grads = torch.autograd.grad(val_before, weights)
        new_weights, memory = self._teacher_update(weights, grads)
        logits: list[Tensor] = []
        second = self._unroll(parts, new_weights, logits)
        val_after = F.cross_entropy(val.forward(second.forward), val.y)  # type: ignore[arg-type]
        ctx.optimize(val_after, ["teacher"])
        second.commit()
        with torch.no_grad():
            for w, new in zip(self.loss_net.weights(), new_weights):
                w.copy_(new)
            for buf, value in zip(self._memory("h") + self._memory("c"), memory):
                buf.copy_(value)
        dln = torch.stack(second.losses).mean().detach()
        z, y = torch.cat(logits), torch.cat([part.y for part in parts])  # type: ignore[misc]
        stats = logit_stats(z, y)
        self._last_stats = {f"last_{k}": float(v) for k, v in stats.items()}  # logged at the epoch's end
        metrics = {"val_ce_before": val_before.detach(), "val_ce": val_after.detach(), **stats,
                   "inner_steps": torch.tensor(float(len(parts)))}
        return StepOutput(terms={"dln": dln}, logits=z if self.params.loop == "fixed" else None, metrics=metrics)

    def _teacher_update(self, weights: list[Tensor], grads: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """DLN' = DLN - scale * LSTM(preprocess(g)), differentiable in the LSTM's parameters, and its new memory."""
        flat = torch.cat([g.detach().reshape(-1) for g in grads])
        update, hidden, cell = self.lstm(preprocess_gradients(flat, self.params.preproc_factor),
                                         self._memory("h"), self._memory("c"))
        steps = (self.params.update_scale * update.view(-1)).split([w.numel() for w in weights])
        new = [w.detach() - s.view_as(w) for w, s in zip(weights, steps)]
        return new, [t.detach() for t in hidden + cell]

    def on_epoch_start(self, ctx: StepContext) -> None:
        if ctx.epoch == 0:  # the loss network as initialised
            ctx.log(**self.grid_values())

    def on_epoch_end(self, ctx: StepContext) -> None:
        ctx.log(**self.grid_values(), **self._last_stats)

    def grid_values(self) -> dict[str, float]:
        """The learned loss on the `GRID` x `GRID` (true-class, other-class) scores, keyed dln_tXXX_oYYY in
        thousandths, with `dln_good_minus_bad` = L(0.95, 0.05) - L(0.05, 0.95) (negative: it prefers correct)."""
        grid = torch.tensor(GRID, dtype=self.loss_net.layers[0].weight.dtype, device=self.lstm_h0.device)
        true_p, other_p = torch.meshgrid(grid, grid, indexing="ij")
        values = self.learned_loss(true_p, other_p).cpu()
        out = {f"dln_t{round(t * 1000):03d}_o{round(o * 1000):03d}": float(values[i, j])
               for i, t in enumerate(GRID) for j, o in enumerate(GRID)}
        out["dln_good_minus_bad"] = float(values[-1, 0] - values[0, -1])
        return out

    def learned_loss(self, true_prob: Tensor, other_prob: Tensor) -> Tensor:
        """The DLN's value on 1-vs-1 rows (true-class score, other-class score, 1, 0): the learned loss as a
        function of the two sigmoid scores, for plots."""
        rows = torch.stack([true_prob, other_prob, torch.ones_like(true_prob), torch.zeros_like(true_prob)], dim=-1)
        with torch.no_grad():
            return loss_network(rows.reshape(-1, 4), self.loss_net.weights()).view_as(true_prob)

