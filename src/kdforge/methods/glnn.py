"""GLNN (Zhang et al., "Graph-less Neural Networks: Teaching Old MLPs New Tricks via Distillation", ICLR 2022,
Eq. 1): a GNN teacher's soft labels on every node of the graph distilled into a student that needs no graph at
inference (an `mlp` on node features), with kdforge's KD or WSL loss.

    L = ce_weight * CE(student, y) on the labeled nodes + kd_weight * soft term on `nodes`

The paper's transductive setting distills on every node (`nodes: all`); `nodes: train` keeps to the labeled batch
(plain KD). Reference: the paper's lambda is ce_weight with kd_weight = 1 - lambda; torch_geometric's
examples/glnn.py uses lambda = 0 and T = 1, the defaults here.
Deviation (WSL): WSL's per-sample weight needs a label; on unlabeled nodes the teacher's predicted class stands in.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch
from kdforge.engine.contract import StepContext
from kdforge.losses import kd_loss, wsl_loss
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.methods.checks import require_graph
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class GLNNParams(MethodParams):
    loss: Literal["kd", "wsl"] = Field("kd", description="soft term: Hinton KD (KL at T) or WSL")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the soft term")
    ce_weight: float = Field(0.0, ge=0, description="GLNN's lambda: weight of the CE on labeled nodes")
    kd_weight: float = Field(1.0, ge=0, description="weight of the soft term (GLNN: 1 - lambda)")
    nodes: Literal["all", "train"] = Field("all", description="nodes the soft term covers: every node of the graph "
                                                              "(GLNN, transductive) or the labeled batch")


@METHODS.register("glnn")
class GLNN(Method[GLNNParams]):
    """{"ce": ce_weight * CE on the batch, "kd"|"wsl": kd_weight * soft term on `nodes`}."""


    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        require_graph(setup.spec, "method glnn (a GNN distilled into an MLP)", hint="; use kd")

    def loss_terms(self, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        p = self.params
        every = replace(batch, select=None)  # the whole graph: its rows are all the nodes
        student_all, teacher_all = self.student_and_teacher(every)
        logits = batch.rows(student_all)
        terms = {"ce": p.ce_weight * self.hard_loss(logits, batch)}
        if p.nodes == "train":
            student_all, teacher_all = logits, batch.rows(teacher_all)
        if p.loss == "kd":
            terms["kd"] = p.kd_weight * kd_loss(student_all, teacher_all, p.temperature)
        else:
            labels = teacher_all.argmax(1)
            if batch.select is not None and p.nodes == "all":
                labels = labels.index_put((batch.select,), batch.labels)
            elif p.nodes == "train":
                labels = batch.labels
            terms["wsl"] = p.kd_weight * wsl_loss(student_all, teacher_all, labels, p.temperature)
        return logits, terms
