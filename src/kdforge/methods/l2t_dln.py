"""L2T-DLN (Hai et al., "L2T-DLN: Learning to Teach with Dynamic Loss Network", NeurIPS 2023): the student is
trained on a loss computed by a small network (the dynamic loss network, DLN) over the 1-vs-1 transformation of
its outputs and labels; a teacher, a coordinate-wise LSTM, updates the DLN's weights from the gradient of a
validation loss taken through K unrolled student steps (`kdforge.meta.unroll`).

One training step of this method is one outer step of the official `main.py` (1017137588qqcom/L2T-DLN):
1. the run's batch is cut into K inner batches (`data.batch_size = K * inner batch`: 15 x 25 in the paper's code);
2. K differentiable SGD steps of the student on the DLN loss; CE of the result on a validation batch;
3. g = d(val CE)/d(DLN weights), detached; DLN' = DLN - scale * LSTM(preprocess(g)), the LSTM's memory carried
   from step to step (detached between steps);
4. the SAME K steps are unrolled again from the SAME start with DLN'; the validation CE after them trains the
   LSTM (Adam, its gradient flowing LSTM -> DLN' -> the K student steps);
5. the student keeps the result of the second unroll, the DLN keeps DLN'.
The validation batch comes from the run's `val` split (`ctx.next_batch("val")`): the official code splits the
training set 50/50 (`data.val_fraction: 0.5` in the example config).

Deviations from the official code: the split is drawn once (`data.split_seed`), where `main.py` draws a new random
50/50 split at each of its outer loops; the validation batch is the run's batch size (K * inner batch) instead of
100; the DLN starts from nn.Linear's default initialisation, which is what the official code runs too (its
`init_weight` tests `isinstance(m, nn.Linear)`, false for its `MetaLinear` layers, so the Kaiming call in it never
applies); one process only (the inner SGD steps are not averaged over processes).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput
from kdforge.errors import ConfigError
from kdforge.losses import dln_loss, loss_network, preprocess_gradients
from kdforge.meta import unroll
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class L2TDLNParams(MethodParams):
    # Defaults are the official main.py / DLN_LSTM.py settings.
    inner_steps: int = Field(15, ge=1, description="K: unrolled student steps per teacher update; the run's batch "
                                                   "is cut into K inner batches")
    inner_lr: float = Field(0.1, gt=0, description="the student's SGD rate in the unrolled steps (no momentum)")
    teacher_lr: float = Field(1e-3, gt=0, description="Adam rate of the LSTM teacher")
    update_scale: float = Field(1e-3, gt=0, description="DLN' = DLN - update_scale * LSTM output")
    dln_width: int = Field(40, ge=1, description="width of the loss network's hidden layers")
    dln_layers: int = Field(4, ge=1, description="hidden layers of the loss network (4 -> 40 x 4 -> 1)")
    lstm_hidden: int = Field(64, ge=1, description="hidden size of the teacher's first three LSTM cells")
    preproc_factor: float = Field(10.0, gt=0, description="p of the gradient preprocessing")


class LossNetwork(nn.Module):
    """The DLN: bias-free linear layers 4 -> width x layers -> 1 (LeakyReLU between them, applied functionally by
    `losses.loss_network`)."""

    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        sizes = [4] + [width] * layers + [1]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))

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
        x = batch.x if batch.select is not None else pick(batch.x)
        parts.append(Batch(x=x, y=pick(batch.y), index=pick(batch.index), extra=batch.extra,
                           select=pick(batch.select), split=batch.split))
    return parts


@METHODS.register("l2t_dln")
class L2TDLN(Method):
    """Owns its step: K unrolled student steps on the learned loss, the LSTM teacher's update of the loss, a
    re-unroll; the student, the DLN, the LSTM, its memory and its Adam state are all checkpointed."""

    Params: ClassVar[type[MethodParams]] = L2TDLNParams
    params: L2TDLNParams
    needs_teacher: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        p = self.params
        self.loss_net = LossNetwork(p.dln_width, p.dln_layers)
        self.lstm = LSTMTeacher(p.lstm_hidden)
        n = sum(w.numel() for w in self.loss_net.weights())
        for i, size in enumerate(self.lstm.state_sizes()):  # the teacher's memory, one row per DLN weight
            self.register_buffer(f"lstm_h{i}", torch.zeros(n, size))
            self.register_buffer(f"lstm_c{i}", torch.zeros(n, size))

    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        # The student moves only through the unrolled SGD steps; the DLN only through the LSTM's output.
        return {"teacher": Optimization(torch.optim.Adam(self.lstm.parameters(), lr=self.params.teacher_lr))}

    def _memory(self, kind: str) -> list[Tensor]:
        return [getattr(self, f"lstm_{kind}{i}") for i in range(len(self.lstm.cells))]

    def _unroll(self, parts: list[Batch], weights: list[Tensor], logits: list[Tensor]):
        start = {n: q.detach().requires_grad_() for n, q in self.student.named_parameters() if q.requires_grad}

        def inner(forward, k: int) -> Tensor:
            out = parts[k].forward(forward)  # type: ignore[arg-type]  (any callable model works)
            logits.append(out.detach())
            return dln_loss(out, parts[k].y, weights)  # type: ignore[arg-type]

        return unroll(self.student, inner, self.params.inner_steps, self.params.inner_lr, params=start)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        if batch.target is not None or batch.y is None:
            raise ConfigError("method l2t_dln: the learned loss needs hard labels; set data.augment.mixup_alpha and "
                              "cutmix_alpha to 0 and train on labeled data")
        if ctx.runtime.distributed:
            raise ConfigError("method l2t_dln runs in one process only; launch it without torchrun")
        if len(batch) < self.params.inner_steps:
            raise ConfigError(f"method l2t_dln: a batch of {len(batch)} cannot be cut into inner_steps="
                              f"{self.params.inner_steps} parts; raise data.batch_size (K * inner batch)")
        parts, val = inner_batches(batch, self.params.inner_steps), ctx.next_batch("val")
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
        return StepOutput(terms={"dln": dln}, logits=torch.cat(logits),
                          metrics={"val_ce_before": val_before.detach(), "val_ce": val_after.detach()})

    def _teacher_update(self, weights: list[Tensor], grads: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """DLN' = DLN - scale * LSTM(preprocess(g)), differentiable in the LSTM's parameters, and its new memory."""
        flat = torch.cat([g.detach().reshape(-1) for g in grads])
        update, hidden, cell = self.lstm(preprocess_gradients(flat, self.params.preproc_factor),
                                         self._memory("h"), self._memory("c"))
        steps = (self.params.update_scale * update.view(-1)).split([w.numel() for w in weights])
        new = [w.detach() - s.view_as(w) for w, s in zip(weights, steps)]
        return new, [t.detach() for t in hidden + cell]

    def learned_loss(self, true_prob: Tensor, other_prob: Tensor) -> Tensor:
        """The DLN's value on 1-vs-1 rows (true-class score, other-class score, 1, 0): the learned loss as a
        function of the two sigmoid scores, for plots."""
        rows = torch.stack([true_prob, other_prob, torch.ones_like(true_prob), torch.zeros_like(true_prob)], dim=-1)
        with torch.no_grad():
            return loss_network(rows.reshape(-1, 4), self.loss_net.weights()).view_as(true_prob)

