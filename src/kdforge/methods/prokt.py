"""ProKT (Shi et al., "Follow Your Path: a Progressive Method for Knowledge Distillation", ECML-PKDD 2021,
arXiv 2107.09305): the student does not chase the teacher's final outputs but a sequence of local targets.

At each step a trainable copy of the teacher network (the guide) takes one gradient step on
CE(q_T, y) + lambda * KL(q_T || p_S) (`losses.prokt_teacher_loss`: the approximate mirror-descent projection of
the teacher's supervision toward the student's current distribution), and the student then fits the updated
guide's outputs, q^{t+1}, with ce_weight * CE + kd_weight * T^2 KL(q^{t+1} || p_S).

No official code was found. What the paper's abstract and Sec. 3 state is the projection by approximate mirror
descent; the rest is recalled from the paper and unverified here: the guide is trained jointly with the student
from a random initialisation (`guide_init: scratch`, the teacher's architecture; `guide_init: teacher` starts it
from the trained teacher's weights instead), with the run's optimizer and schedule for both networks.
"""
from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from kdforge.data.types import Batch
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput
from kdforge.errors import ConfigError
from kdforge.losses import kd_loss, prokt_teacher_loss
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class ProKTParams(MethodParams):
    proximal_weight: float = Field(1.0, ge=0, description="lambda: weight of KL(q_T || p_S) in the guide's loss "
                                                          "(1 / mirror-descent step size)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of both KL terms")
    ce_weight: float = Field(1.0, ge=0, description="weight of the student's hard-label CE")
    kd_weight: float = Field(1.0, ge=0, description="weight of T^2 KL(q^{t+1} || p_S), the student's local target")
    guide_init: Literal["scratch", "teacher"] = Field("scratch", description="the guide starts from a random "
                                                      "initialisation of the teacher's architecture, or from its weights")


def reinitialise(model: nn.Module) -> nn.Module:
    """Every submodule with `reset_parameters` drawn afresh from the global RNG (seeded by the run)."""
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()  # type: ignore[operator]
    return model


@METHODS.register("prokt")
class ProKT(Method[ProKTParams]):
    """Two optimizers: the guide (projected teacher) steps first, then the student on the guide's new outputs."""
    accumulates: ClassVar[bool] = False  # phases of its own step: no gradient accumulation

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        model = None if teacher is None else teacher.network
        if model is None:
            raise ConfigError("method prokt trains a copy of the teacher network; use teacher.source: live")
        guide = copy.deepcopy(model).train()
        for q in guide.parameters():
            q.requires_grad_(True)
        self.guide = reinitialise(guide) if self.params.guide_init == "scratch" else guide

    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        return {"guide": self.optimization(self.guide.parameters(), plan),
                "student": self.optimization(self.student.parameters(), plan)}

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        p = self.params
        logits = batch.forward(self.student)
        guide_loss = prokt_teacher_loss(batch.forward(self.guide), logits, batch.labels, p.proximal_weight,
                                        p.temperature)
        ctx.optimize(guide_loss, ["guide"])
        with torch.no_grad():  # q^{t+1}: the guide after its projected step, a constant target for the student
            target = batch.forward(self.guide)
        terms = {"ce": p.ce_weight * self.hard_loss(logits, batch),
                 "kd": p.kd_weight * kd_loss(logits, target, p.temperature)}
        ctx.optimize(sum(terms.values()), ["student"])  # type: ignore[arg-type]
        return StepOutput(terms=terms, logits=logits, metrics={"guide_loss": guide_loss.detach()})
