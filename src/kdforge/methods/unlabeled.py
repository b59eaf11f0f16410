"""Distillation with unlabeled examples (a label budget: a small labeled `train`, a large `unlabeled` part).

Each step takes one labeled batch (CE on its labels) and `unlabeled_batches` batches of the unlabeled part from
`ctx.next_batch("unlabeled")`, whose targets come from the teacher source (live or cache). The methods differ only
in the unlabeled loss: soft teacher labels (`pseudo_soft`, plain KD), hard pseudo-labels (`pseudo_hard`),
confidence-thresholded ones (`pseudo_threshold`), forward loss-correction (`forward_correction`) and SLaM
(`slam`, in methods/slam.py), the method of Kontonis et al., NeurIPS 2023. The baselines are our choice: which
ones the paper compares against could not be read here (forward correction may not be one of them).

Methods that calibrate on labeled validation data (a transition matrix, SLaM's α and k) do it at their first step,
from `ctx.data.val`, deterministically (a resumed run recomputes the same values). Every run logs the teacher's
pseudo-label accuracy on the whole unlabeled part against its hidden labels once ("method" record of
metrics.jsonl), and per step on the batches drawn (`pseudo_label_acc` in the epoch records): analysis only, the
hidden labels never reach a loss.
"""
from __future__ import annotations

from typing import ClassVar, TypeVar

import torch
from pydantic import Field
from torch import Tensor

from kdforge.data import iter_eval
from kdforge.data.types import Batch, DataBundle
from kdforge.engine.contract import StepContext, StepOutput
from kdforge.losses import (
    confidence_mask, forward_corrected_loss, hard_pseudo_label_loss, kd_loss, thresholded_pseudo_label_loss,
    transition_matrix,
)
from kdforge.methods.base import Method, MethodParams
from kdforge.methods.checks import require_unlabeled, require_validation
from kdforge.registry import METHODS


class UnlabeledParams(MethodParams):
    labeled_weight: float = Field(1.0, ge=0, description="weight of the CE on the labeled batch")
    unlabeled_weight: float = Field(1.0, ge=0, description="weight of the loss on the unlabeled batches")
    unlabeled_batches: int = Field(1, ge=1, description="unlabeled batches (of data.batch_size) per labeled batch")


class CalibratedParams(UnlabeledParams):
    min_val_samples: int = Field(50, ge=2, description="fewest labeled validation samples to calibrate on; fewer "
                                                       "is an error before training")


UP = TypeVar("UP", bound=UnlabeledParams)


class UnlabeledMethod(Method[UP]):
    """Labeled CE plus `unlabeled_loss` on unlabeled batches; subclasses that calibrate set `calibrates`."""

    calibrates: ClassVar[bool] = False
    calibration_target: ClassVar[str] = ""  # what is fitted on validation data, for error messages

    @classmethod
    def check_data(cls, params: MethodParams, data: DataBundle) -> None:
        name = METHODS.name_of(cls)
        require_unlabeled(data, name)
        if cls.calibrates:
            assert isinstance(params, CalibratedParams)
            require_validation(data, params.min_val_samples, f"{cls.calibration_target} of method {name!r}")

    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(the loss on one unlabeled batch, per-step metrics to average over the epoch)."""
        raise NotImplementedError

    def calibrate(self, val_logits: Tensor, val_labels: Tensor) -> dict[str, float]:
        """Fit what the loss needs from the teacher's validation logits; returns scalars to log."""
        return {}

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        if not getattr(self, "_prepared", False):
            self._prepare(ctx)
        p = self.params
        logits = batch.forward(self.student)
        ce = self.hard_loss(logits, batch)
        unlabeled, metrics = self._unlabeled_pass(ctx)
        terms = {"ce": p.labeled_weight * ce, "unlabeled": p.unlabeled_weight * unlabeled}
        ctx.optimize(terms["ce"] + terms["unlabeled"])
        return StepOutput(terms=terms, logits=logits, metrics=metrics)

    def _unlabeled_pass(self, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and the metrics averaged over `unlabeled_batches` batches of the unlabeled stream."""
        n = self.params.unlabeled_batches
        losses: list[Tensor] = []
        metrics: dict[str, Tensor] = {}
        for _ in range(n):
            batch = ctx.next_batch("unlabeled")
            teacher_logits = self.teacher_outputs(batch).logits
            loss, step_metrics = self.unlabeled_loss(batch.forward(self.student), teacher_logits)
            losses.append(loss)
            for k, v in {**step_metrics, **self._pseudo_label_hits(batch, teacher_logits, ctx)}.items():
                metrics[k] = metrics.get(k, 0) + v.detach()
        return sum(losses) / n, {k: v / n for k, v in metrics.items()}  # type: ignore[return-value]

    # ---- helpers ------------------------------------------------------------------------------------------
    def _prepare(self, ctx: StepContext) -> None:
        """Calibrate on validation (when the method does) and log the teacher's pseudo-label accuracy."""
        logged: dict[str, float] = {}
        if self.calibrates:
            val_logits, val_labels = self._teacher_logits(ctx, "val")
            logged["teacher_val_top1"] = float(val_logits.argmax(1).eq(val_labels).float().mean())
            logged.update(self.calibrate(val_logits, val_labels))
        unlabeled = ctx.data.unlabeled
        if unlabeled is not None and unlabeled.hidden_y is not None:
            u_logits, _ = self._teacher_logits(ctx, "unlabeled")
            logged["teacher_pseudo_label_acc"] = float(u_logits.argmax(1).cpu().eq(unlabeled.hidden_y).float().mean())
        ctx.log(**logged)
        self._prepared = True

    @torch.no_grad()
    def _teacher_logits(self, ctx: StepContext, split: str) -> tuple[Tensor, Tensor | None]:
        """The teacher's logits on a whole split (no augmentation) and the split's labels, on the run's device."""
        part = ctx.data.split(split)
        logits = torch.cat([self.teacher_outputs(b.to(ctx.runtime.device)).logits
                            for b in iter_eval(part, 1000)])
        return logits, None if part.y is None else part.y.to(logits.device)

    def _pseudo_label_hits(self, batch: Batch, teacher_logits: Tensor, ctx: StepContext) -> dict[str, Tensor]:
        """The teacher's top-1 accuracy on this unlabeled batch against the hidden labels (analysis only)."""
        hidden = ctx.data.unlabeled.hidden_y if ctx.data.unlabeled is not None else None
        if hidden is None:
            return {}
        truth = hidden.index_select(0, batch.index.cpu()).to(teacher_logits.device)
        return {"pseudo_label_acc": teacher_logits.argmax(1).eq(truth).float().mean()}


class SoftParams(UnlabeledParams):
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the teacher's soft labels")


@METHODS.register("pseudo_soft")
class PseudoSoft(UnlabeledMethod[SoftParams]):
    """Soft teacher labels on unlabeled data: Hinton et al. 2015 KD (T^2 * KL at temperature T)."""


    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return kd_loss(student_logits, teacher_logits, self.params.temperature), {}


@METHODS.register("pseudo_hard")
class PseudoHard(UnlabeledMethod[UnlabeledParams]):
    """The teacher's top-1 class as a hard label (Lee 2013)."""

    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return hard_pseudo_label_loss(student_logits, teacher_logits), {}


class ThresholdParams(UnlabeledParams):
    threshold: float = Field(0.9, ge=0, le=1, description="least teacher top-1 probability a pseudo-label needs")


@METHODS.register("pseudo_threshold")
class PseudoThreshold(UnlabeledMethod[ThresholdParams]):
    """Hard pseudo-labels where the teacher's top-1 probability reaches `threshold` (FixMatch's mask)."""


    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        kept = confidence_mask(teacher_logits, self.params.threshold).mean()
        return thresholded_pseudo_label_loss(student_logits, teacher_logits, self.params.threshold), {"kept": kept}


class ForwardParams(CalibratedParams):
    smoothing: float = Field(1.0, ge=0, description="Laplace count added to each cell of the validation confusion "
                                                   "matrix before its rows are normalised")


@METHODS.register("forward_correction")
class ForwardCorrection(UnlabeledMethod[ForwardParams]):
    """Forward loss-correction (Patrini et al. 2017) of the teacher's hard labels, T estimated on validation."""

    calibrates: ClassVar[bool] = True
    calibration_target: ClassVar[str] = "the transition matrix"

    def calibrate(self, val_logits: Tensor, val_labels: Tensor) -> dict[str, float]:
        self.transition = transition_matrix(val_labels, val_logits.argmax(1), val_logits.shape[1],
                                            self.params.smoothing).to(val_logits.device)
        return {"transition_diagonal_mean": float(self.transition.diagonal().mean())}

    def unlabeled_loss(self, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return forward_corrected_loss(student_logits, teacher_logits.argmax(1), self.transition), {}
