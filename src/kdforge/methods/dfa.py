"""DFA (Guan et al., "Differentiable Feature Aggregation Search for Knowledge Distillation", ECCV 2020): search,
per teacher stage, a weighting of several of the teacher's feature maps (a single teacher imitating several), then
distil the student's features toward the derived aggregations.

What the paper's abstract fixes, and this file does: two stages in one run; stage 1 is a DARTS-style bi-level
search (network weights on training batches, architecture parameters alpha on held-out batches, alternating) with
a *bridge loss* of two paths that pull the shared alpha in opposite directions, one for the aggregation's
learnability by the student and one for its expressivity; stage 2 is distillation with the derived aggregation.

The paper's text and code could not be read here, so the paths are our reading of the abstract, not its
equations:
- learnability (teacher -> student): the student's connector output vs the aggregation, hint (MSE) loss; alone it
  moves alpha toward maps the student already matches (shallow, simple ones);
- expressivity (student -> teacher side): the teacher's own later layers run on the aggregation in place of the
  stage output (`models.taps.replaced_output`), CE to the labels; alone it moves alpha toward the stage output,
  which those layers were trained on.
Bridge loss = learnability + expressivity_weight * expressivity, minimised over alpha on `val` batches
(first-order DARTS: one Adam step of alpha per weight step, DARTS's lr 3e-4, betas (0.5, 0.999), wd 1e-3).
The search trains a copy of the student and its own connectors (DARTS discards its search network); stage 2
trains the real student from its initial weights with CE (+ KD) + feature_weight * hint to the derived
aggregation (FitNet's loss and connector; the paper's stage-2 loss is not known here). Derived = the softmax
weights frozen (`derive: weights`) or one-hot on the heaviest map (`derive: argmax`, DARTS's discretisation).
The derived aggregation is written to `dfa_aggregation.json` in the run folder; `aggregation: FILE` starts a
later run from it with no search. `train.epochs` counts both stages; the two stages have schedules of their own.
"""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from kdforge.data.types import Batch, DataBundle
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput
from kdforge.errors import ConfigError, at_key
from kdforge.losses import aggregate_features, hint_loss
from kdforge.methods.base import LogitTermParams, Method, MethodParams, Setup
from kdforge.methods.connectors import connector
from kdforge.methods.checks import require_validation
from kdforge.models.taps import Taps, replaced_output
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource

AGGREGATION_FILE = "dfa_aggregation.json"


class DFAStage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    student_layer: str = Field(description="module path of the student's feature distilled at this stage")
    teacher_layers: list[str] = Field(min_length=1, description="module paths of the teacher's candidate maps, the "
                                                                "stage output LAST (its output is replaced on the "
                                                                "expressivity path); earlier maps may be larger")


class DFAParams(LogitTermParams):
    stages: list[DFAStage] = Field(min_length=1, description="one entry per distilled stage")
    feature_weight: float = Field(100.0, ge=0, description="weight of the hint loss to the aggregation (FitNet's)")
    search_epochs: int | None = Field(None, ge=0, description="epochs of stage 1 (the search); default 1, or 0 "
                                                              "when `aggregation` is given")
    expressivity_weight: float = Field(1.0, ge=0, description="weight of the expressivity path in the bridge loss")
    arch_lr: float = Field(3e-4, gt=0, description="Adam rate of the architecture parameters (DARTS)")
    arch_weight_decay: float = Field(1e-3, ge=0, description="weight decay of the architecture parameters (DARTS)")
    derive: Literal["weights", "argmax"] = Field("weights", description="frozen softmax weights, or one-hot on the "
                                                                        "heaviest map")
    aggregation: str | None = Field(None, description=f"a {AGGREGATION_FILE} of an earlier run: no search")

    @model_validator(mode="after")
    def _search_or_file(self) -> "DFAParams":
        if self.aggregation is not None and self.search_epochs:
            raise ValueError("aggregation (a derived aggregation) skips the search: set search_epochs=0 with it")
        return self

    @property
    def search(self) -> int:
        return (0 if self.aggregation else 1) if self.search_epochs is None else self.search_epochs


@METHODS.register("dfa")
class DFA(Method[DFAParams]):
    """Epochs < search: {"ce", "feature"} (+ {"kd"}) of the search copy, metrics learnability / expressivity;
    then the same terms for the student toward the derived aggregation."""
    accumulates: ClassVar[bool] = False  # phases of its own step: no gradient accumulation

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: DFAParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        if params.search and (teacher is None or teacher.network is None):
            raise ConfigError("method dfa: the search runs the teacher's later layers on aggregated features; use "
                              "teacher.source=live, or give method.params.aggregation to skip the search")
        if params.search:  # copied before the student is tapped, so that the copy carries none of its hooks
            self.search_student = copy.deepcopy(student)  # DARTS's search network: trained, then discarded
        s_paths = [s.student_layer for s in params.stages]
        t_paths = [p for s in params.stages for p in s.teacher_layers]
        self.taps, s_shapes, t_shapes = self.tap_layers(s_paths, t_paths, "method.params.stages",
                                                        "method.params.stages")
        shape = dict(zip(t_paths, t_shapes))
        outputs = [shape[s.teacher_layers[-1]] for s in params.stages]
        with at_key("method.params.stages"):
            self._check_candidates(shape)
            self.connectors = nn.ModuleList(connector(s, t) for s, t in zip(s_shapes, outputs))
        self.arch = nn.ParameterList(nn.Parameter(torch.zeros(len(s.teacher_layers))) for s in params.stages)
        # The derived weights, flat over stages, and whether they are set: fixed-size buffers, so a checkpoint
        # taken during the search loads into a freshly built method as one taken after it does.
        self.register_buffer("derived", torch.zeros(sum(len(s.teacher_layers) for s in params.stages)))
        self.register_buffer("is_derived", torch.zeros((), dtype=torch.bool))
        if params.aggregation:
            self._load_aggregation(Path(params.aggregation))
        if params.search:
            self.search_taps = Taps(self.search_student, s_paths)
            self.search_connectors = copy.deepcopy(self.connectors)

    @classmethod
    def check_data(cls, params: MethodParams, data: DataBundle) -> None:
        assert isinstance(params, DFAParams)
        if params.search:  # alpha is fitted on held-out batches, never on test
            require_validation(data, 1, "the architecture parameters of method 'dfa' (its search)")

    def _check_candidates(self, shape: dict[str, tuple[int, ...]]) -> None:
        for i, stage in enumerate(self.params.stages):
            out = shape[stage.teacher_layers[-1]]
            for path in stage.teacher_layers[:-1]:
                c = shape[path]
                if len(c) != len(out) or c[0] != out[0] or any(a < b for a, b in zip(c[1:], out[1:])):
                    raise ConfigError(f"stage {i}: teacher map {path!r} {c} cannot join the stage output "
                                      f"{stage.teacher_layers[-1]!r} {out}: it needs the same channels and at least "
                                      "its spatial size")

    # ---- optimizers: the search copy, the architecture, the student -------------------------------------------
    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        search = self.params.search
        if search >= plan.epochs:
            raise ConfigError(f"method.params.search_epochs={search} leaves no epoch of train.epochs={plan.epochs} "
                              "for distillation; raise train.epochs or lower search_epochs")
        opts = {"main": self.optimization([*self.student.parameters(), *self.connectors.parameters()],
                                          replace(plan, epochs=plan.epochs - search))}
        if search:
            opts["search"] = self.optimization([*self.search_student.parameters(),
                                                *self.search_connectors.parameters()], replace(plan, epochs=search))
            p = self.params
            opts["arch"] = Optimization(torch.optim.Adam(self.arch.parameters(), lr=p.arch_lr, betas=(0.5, 0.999),
                                                         weight_decay=p.arch_weight_decay))
        return opts

    # ---- the aggregation ---------------------------------------------------------------------------------------
    def weights(self) -> list[Tensor]:
        """Per stage, the current mixing weights: softmax(alpha) while searching, the derived ones after."""
        if self.is_derived:
            return list(self.derived.split([len(s.teacher_layers) for s in self.params.stages]))
        return [a.softmax(0) for a in self.arch]

    def _aggregations(self, features: dict[str, Tensor], weights: list[Tensor]) -> list[Tensor]:
        return [aggregate_features([features[p] for p in s.teacher_layers], w)
                for s, w in zip(self.params.stages, weights)]

    def _derive(self, ctx: StepContext) -> None:
        with torch.no_grad():
            w = [a.softmax(0) for a in self.arch]
            if self.params.derive == "argmax":
                w = [F.one_hot(x.argmax(), len(x)).to(x.dtype) for x in w]
            self.derived.copy_(torch.cat(w))
            self.is_derived.fill_(True)
        stages = [{"student_layer": s.student_layer, "teacher_layers": s.teacher_layers, "weights": x.tolist(),
                   "alpha": a.detach().tolist()} for s, x, a in zip(self.params.stages, self.weights(), self.arch)]
        ctx.save_artifact(AGGREGATION_FILE, json.dumps({"derive": self.params.derive, "stages": stages}, indent=2))
        ctx.log(**{f"stage{i}_w{j}": v for i, s in enumerate(stages) for j, v in enumerate(s["weights"])})

    def _load_aggregation(self, path: Path) -> None:
        key = "method.params.aggregation"
        try:
            saved = json.loads(path.read_text())
            stages = [(s["teacher_layers"], [float(v) for v in s["weights"]]) for s in saved["stages"]]
        except OSError as e:
            raise ConfigError(f"{key}: cannot read {path} ({e.strerror or e}); give the {AGGREGATION_FILE} of a "
                              "DFA run") from None
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{key}: {path} is not a {AGGREGATION_FILE} written by a DFA run") from None
        want = [s.teacher_layers for s in self.params.stages]
        if [layers for layers, _ in stages] != want:
            raise ConfigError(f"{key}: {path} aggregates teacher layers {[layers for layers, _ in stages]}, this run's "
                              f"stages name {want}; use the same stages as the run that searched it")
        with torch.no_grad():
            self.derived.copy_(torch.tensor([v for _, ws in stages for v in ws]))
            self.is_derived.fill_(True)

    # ---- the step ----------------------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: StepContext) -> None:
        if ctx.epoch >= self.params.search and not self.is_derived:
            self._derive(ctx)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        if not self.is_derived:
            return self._search_step(batch, ctx)
        return self._distil_step(batch, ctx, self.student, self.taps, self.connectors, "main")

    def _distil_step(self, batch: Batch, ctx: StepContext, student: nn.Module, taps: Taps,
                     connectors: nn.ModuleList, opt: str) -> StepOutput:
        """CE (+ KD) + feature_weight * hint of each stage's connector output to the (detached) aggregation."""
        with taps.capture() as features:
            logits = batch.forward(student)
        teacher = self.teacher_outputs(batch)
        targets = self._aggregations(teacher.features, [w.detach() for w in self.weights()])
        hint = sum(hint_loss(c(batch.rows(features[s.student_layer])), t)
                   for c, s, t in zip(connectors, self.params.stages, targets))
        terms = {**self.logit_terms(logits, batch, self.params, teacher.logits),
                 "feature": self.params.feature_weight * hint}
        ctx.optimize(sum(terms.values()), [opt])  # type: ignore[arg-type]
        return StepOutput(terms={k: v.detach() for k, v in terms.items()}, logits=logits.detach())

    def _search_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        out = self._distil_step(batch, ctx, self.search_student, self.search_taps, self.search_connectors, "search")
        learn, express = self.bridge_loss(ctx.next_batch("val"))
        alphas = list(self.arch)
        grads = torch.autograd.grad(learn + self.params.expressivity_weight * express, alphas)
        arch = ctx.optimizers["arch"]
        for a, g in zip(alphas, grads):
            a.grad = g
        ctx.runtime.average_gradients(alphas, ctx.grad_weight)
        arch.step()
        out.metrics = {"learnability": learn.detach(), "expressivity": express.detach()}
        return out

    def bridge_loss(self, val: Batch) -> tuple[Tensor, Tensor]:
        """(learnability, expressivity) on a held-out batch, differentiable in alpha only."""
        with torch.no_grad(), self.search_taps.capture() as features:
            val.forward(self.search_student)
        teacher = self.teacher_outputs(val)
        weights = [a.softmax(0) for a in self.arch]
        targets = self._aggregations(teacher.features, weights)
        with torch.no_grad():
            reached = [c(val.rows(features[s.student_layer]))
                       for c, s in zip(self.search_connectors, self.params.stages)]
        learn = sum(hint_loss(r, t) for r, t in zip(reached, targets))
        express = torch.zeros(())
        for stage, target in zip(self.params.stages, targets):
            model = self.teacher.network  # type: ignore[union-attr]  (a live teacher: checked when built)
            with replaced_output(model, stage.teacher_layers[-1], target):
                express = express + F.cross_entropy(val.forward(model), val.y)  # type: ignore[arg-type]
        return learn, express  # type: ignore[return-value]

    def eval_model(self) -> nn.Module:
        return self.student
