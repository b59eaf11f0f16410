"""The method contract. A simple method writes `loss_terms`; a method with its own step overrides `training_step`.

    class KD(Method[KDParams]):             # one file, one registered class; its params declared once
        def loss_terms(self, batch, ctx):
            logits, teacher = self.student_and_teacher(batch)
            return logits, {"ce": ..., "kd": ...}

Everything a method trains besides the student (connectors, projectors, loss networks) is a submodule other than
`student` and `teacher`: `trainable()` collects them for the optimizer and for checkpoints, and only the student
is exported. State that is not a parameter or buffer (counters, pseudo-label sets) goes in `extra_state`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from kdforge.data.types import Batch, DataBundle, DataSpec, Split
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput
from kdforge.engine.optim import build_optimizer, build_scheduler
from kdforge.errors import at_key
from kdforge.losses import hard_cross_entropy, kd_loss
from kdforge.models.taps import Taps
from kdforge.teachers.base import TeacherOutput, TeacherSource


class MethodParams(BaseModel):
    """Hyper-parameters of a method, validated from `method.params`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LogitTermParams(MethodParams):
    """The CE / KD weights a feature method combines its own term with (`Method.logit_terms`); RepDistiller's
    -r / -a, whose feature-method runs use CE 1 and KD 0."""

    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label CE")
    kd_weight: float = Field(0.0, ge=0, description="weight of T^2 * KL to the teacher (RepDistiller's alpha)")
    temperature: float = Field(4.0, gt=0, description="softmax temperature of the KD term")


EXAMPLE_SAMPLES = 8  # training samples a method's dry forwards see while it is built (feature shapes)


@dataclass(frozen=True)
class Setup:
    """What a method may look at while it is built: the data's spec, a few training samples (dry forwards learn
    feature shapes from them, so connectors exist before the optimizer) and the run's label smoothing.

    `train_size` and `train_labels` describe the whole training split, whose positions are `Batch.index`: methods
    with a per-sample memory over it (CRD's memory bank and its other-class negatives) size and fill it from them.
    `train_size` is 0 and `train_labels` None when the Setup was built by hand without them.
    """

    spec: DataSpec
    example: Batch
    label_smoothing: float = 0.0
    train_size: int = 0
    train_labels: Tensor | None = None  # the training split's int64 labels [train_size]; None when unlabeled

    @classmethod
    def for_data(cls, spec: DataSpec, train: Split, label_smoothing: float = 0.0) -> "Setup":
        """The spec, the first `EXAMPLE_SAMPLES` samples of the training split, its size and its labels."""
        return cls(spec, train.batch(torch.arange(min(EXAMPLE_SAMPLES, len(train)))), label_smoothing,
                   train_size=len(train), train_labels=train.y)


P = TypeVar("P", bound=MethodParams)


class Method(nn.Module, Generic[P]):
    """Base of every method; implements the engine's `TrainMethod` protocol with the default behaviour.

    A method declares its params once, as the type argument: `class KD(Method[KDParams])` validates
    `method.params` with KDParams (`Params`, derived from the argument) and types `self.params` as KDParams.
    Subclasses set `needs_teacher` and implement `loss_terms` (or override `training_step` and, with several
    optimizers, `configure_optimizers`). A base shared by several methods stays generic: `class
    UnlabeledMethod(Method[UP])` with its own type variable, `class PseudoSoft(UnlabeledMethod[SoftParams])`.
    """

    Params: ClassVar[type[MethodParams]] = MethodParams
    needs_teacher: ClassVar[bool] = True
    #: whether `train.accumulate` may split its steps into micro-batches: False for a method that owns its step in
    #: several phases or reduces gradients itself (the engine refuses accumulation for it at set-up)
    accumulates: ClassVar[bool] = True
    params: P

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):  # this class's own bases, e.g. Method[KDParams]
            for arg in get_args(base):
                if isinstance(arg, type) and issubclass(arg, MethodParams):
                    cls.Params = arg

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: P, setup: Setup) -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher")
        self.student = student
        # A live teacher is a submodule so that .to(device) moves it; it keeps itself in eval mode.
        self.teacher = teacher
        self.params = params
        self.setup = setup

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.student(*inputs)

    @classmethod
    def check_data(cls, params: MethodParams, data: DataBundle) -> None:
        """Raise a ConfigError when `data` cannot serve this method (no unlabeled part, a validation split too
        small to calibrate on). The API calls it right after the data is built, before any teacher or student
        is trained, so bad input costs nothing."""

    # ---- what simple methods write ------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """(student logits on the batch, {term name: weighted loss}); the terms are summed and optimized."""
        raise NotImplementedError(f"{type(self).__name__} implements neither loss_terms nor training_step")

    # ---- the engine's protocol, with defaults -------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        logits, terms = self.loss_terms(batch, ctx)
        ctx.optimize(sum(terms.values()))  # type: ignore[arg-type]
        return StepOutput(terms=terms, logits=logits)

    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        """One optimizer over `trainable()` with the recipe's optimizer, schedule and grad clip."""
        return {"main": self.optimization(self.trainable(), plan)}

    def optimization(self, params: Any, plan: Plan, steps_per_epoch: int | None = None) -> Optimization:
        """An optimizer over `params` (a module, or parameters) built from the recipe, with its schedule over
        `steps_per_epoch` steps per epoch (default: one step per batch, or per group of `train.accumulate`).
        Methods with several optimizers call this once for each."""
        optimizer = build_optimizer(params, plan.recipe.optim)
        steps = steps_per_epoch or plan.optimizer_steps_per_epoch
        scheduler = build_scheduler(optimizer, plan.recipe.schedule, plan.epochs, steps)
        return Optimization(optimizer, scheduler, plan.recipe.train.grad_clip)

    def on_epoch_start(self, ctx: StepContext) -> None:
        """Called before an epoch's first step."""

    def on_epoch_end(self, ctx: StepContext) -> None:
        """Called after an epoch's last step, before validation and the checkpoint."""

    def before_validation(self, ctx: StepContext) -> None:
        """Called before each evaluation of `eval_model()`."""

    def trainable(self) -> nn.Module:
        """Everything of the method but the teacher: the student, connectors and other submodules, and parameters
        and buffers set on the method itself. Its state dict is what checkpoints hold (keys `student.*`, ...);
        the default optimizer trains its parameters. Built on each call, sharing the method's tensors."""
        keep = nn.Module()
        for name, module in self.named_children():
            if name != "teacher":
                keep.add_module(name, module)
        for name, param in self.named_parameters(recurse=False):
            keep.register_parameter(name, param)
        for name, buf in self.named_buffers(recurse=False):
            keep.register_buffer(name, buf, persistent=name not in self._non_persistent_buffers_set)
        return keep

    def eval_model(self) -> nn.Module:
        """What validation evaluates and the run exports: the student alone."""
        return self.student

    def extra_state(self) -> dict[str, Any]:
        """State besides parameters and buffers, as tensors / numbers / strings / lists / dicts (checkpoints load
        with weights_only=True)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""

    # ---- shared pieces ------------------------------------------------------------------------------------
    def hard_loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """CE on the batch's labels (mixed when mixup/cutmix ran), with the run's label smoothing."""
        return hard_cross_entropy(logits, batch.labels, self.setup.label_smoothing)

    def teacher_outputs(self, batch: Batch) -> TeacherOutput:
        if self.teacher is None:
            raise ValueError(f"{type(self).__name__} has no teacher")
        return self.teacher.outputs(batch)

    def student_with_features(self, batch: Batch, taps: Taps) -> tuple[Tensor, dict[str, Tensor]]:
        """Student logits and the features at `taps`' paths, both with gradients, from one forward pass."""
        with taps.capture() as features:
            logits = batch.forward(self.student)
        return logits, {k: batch.rows(v) for k, v in features.items()}

    def tap_layers(self, student_paths: list[str], teacher_paths: list[str], student_key: str,
                   teacher_key: str) -> tuple[Taps, list[tuple[int, ...]], list[tuple[int, ...]]]:
        """Taps on the student at `student_paths`, the teacher tapped at `teacher_paths`, and each feature's shape
        (without the batch dim, in the order given) from dry forwards on `setup.example`, so connectors can be
        built before the optimizer. Path errors are prefixed with `student_key` / `teacher_key` (config keys)."""
        with at_key(student_key):
            taps = Taps(self.student, student_paths)
            s_shapes = taps.shapes(self.setup.example)
        with at_key(teacher_key):
            self.teacher.tap(teacher_paths)  # type: ignore[union-attr]
            t_features = self.teacher_outputs(self.setup.example).features
        return taps, [s_shapes[p] for p in student_paths], [tuple(t_features[p].shape[1:]) for p in teacher_paths]

    def logit_terms(self, logits: Tensor, batch: Batch, params: LogitTermParams,
                    teacher_logits: Tensor | None = None) -> dict[str, Tensor]:
        """{"ce": ce_weight * CE} plus {"kd": kd_weight * kd_loss at the params' temperature} when kd_weight > 0:
        the logit terms a feature method combines with its own."""
        terms = {"ce": params.ce_weight * self.hard_loss(logits, batch)}
        if params.kd_weight > 0:
            if teacher_logits is None:
                raise ValueError("logit_terms: kd_weight > 0 needs the teacher's logits")
            terms["kd"] = params.kd_weight * kd_loss(logits, teacher_logits, params.temperature)
        return terms

    def student_and_teacher(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Student logits (with grad) and teacher logits (without) on the same view of the batch."""
        return batch.forward(self.student), self.teacher_outputs(batch).logits
