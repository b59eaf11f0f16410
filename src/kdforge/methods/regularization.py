"""Per-epoch counts of WSL's "regularization samples" (Zhou et al., ICLR 2021) for the soft-label methods.

An analysis asks for them with the method param `count_regularization: true` (the bias-variance study does);
off by default, since the count costs a softmax, two gathers and a comparison per step that training does not use.
When on, KD and WSL call `count_regularization` on every batch; `on_epoch_end` (the method contract's epoch hook)
logs the epoch's count and share to metrics.jsonl as a `method` event (`reg_samples`, `reg_fraction`) and starts
again. The running count is in `extra_state`, so a run resumed mid-epoch reports the same numbers.

Three readings are counted, since the paper's defining text was not available (issue 26 spec §2): `reg_fraction`
(D1, CE(s/T, y) < CE(t/T, y) at the distillation T: the primary one), `reg_fraction_t1` (D1', the same at T = 1:
the boundary of WSL's own weight, w_i < 1 - 1/e, and the samples `wsl weighting: filter` drops by default) and
`reg_fraction_grad` (D2, `gradient_dominance_samples`: exploratory).
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.losses import gradient_dominance_samples, regularization_samples
from kdforge.methods.base import Method, P


def count_regularization_field() -> Any:
    """The `count_regularization` param of a method that can count regularization samples (KD, WSL); declared
    last in their params, after the method's own."""
    return Field(False, description=(
        "count, per epoch, the training samples on which the student fits the label better than the teacher "
        "(WSL's regularization samples) and log them as reg_samples / reg_fraction; for analyses (the "
        "bias-variance study turns it on), off by default: it costs a little on every step"))


class CountsRegularizationSamples(Method[P]):
    """A Method that counts, per epoch, the training samples on which the student beats its teacher, when its
    params ask for it (`count_regularization`)."""

    counts_regularization = True  # what an analysis checks before it asks for the counts
    # [D1 samples, labelled samples seen, D1' samples, D2 samples, seen since D1'/D2 were counted] this epoch
    _reg_counts: Tensor | None = None

    def count_regularization(self, logits: Tensor, teacher_logits: Tensor, batch: Batch, temperature: float) -> None:
        if not getattr(self.params, "count_regularization", False):
            return
        if batch.labels is None:  # unlabeled rows have no "true class" to compare on
            return
        mask = regularization_samples(logits, teacher_logits, batch.labels, temperature)
        at_one = regularization_samples(logits, teacher_logits, batch.labels, 1.0)
        grad = gradient_dominance_samples(logits, teacher_logits, batch.labels, temperature)
        seen = torch.tensor(mask.numel(), device=mask.device)
        # Stays on the device: no host sync per step.
        counts = torch.stack([mask.sum(), seen, at_one.sum(), grad.sum(), seen]).double()
        self._reg_counts = counts if self._reg_counts is None else self._reg_counts + counts

    def on_epoch_end(self, ctx: StepContext) -> None:
        if self._reg_counts is not None:
            count, seen, at_one, grad, seen_more = ctx.runtime.all_reduce(self._reg_counts).tolist()
            ctx.log(reg_samples=int(count), reg_fraction=count / max(seen, 1.0),
                    reg_fraction_t1=at_one / max(seen_more, 1.0), reg_fraction_grad=grad / max(seen_more, 1.0))
        self._reg_counts = None

    def extra_state(self) -> dict[str, Any]:
        return {} if self._reg_counts is None else {"reg_counts": self._reg_counts.detach().cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        counts = state.get("reg_counts")
        if counts is not None and len(counts) == 2:  # a checkpoint from before D1'/D2: they count from here on
            counts = torch.cat([counts, counts.new_zeros(3)])
        self._reg_counts = counts
