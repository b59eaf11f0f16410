"""Self-training with pseudo-labels on one graph, in rounds the method owns: plain PL (`pl`), confidence-thresholded
PL (`pl_threshold`) and cautious PL (`cpl`, Wang et al., "Deep Insights into Noisy Pseudo Labeling on Graph Data",
NeurIPS 2023; official code AcEbt/CPL@326fe67 `main_node.py`, `utils.py`).

A run's epochs are cut into rounds: round 0 (`base_epochs`) trains on the labeled nodes; each later round
(`round_epochs`) trains on labeled + pseudo-labeled nodes. Within a round the model with the best validation
accuracy is kept (the official `train()`); at the round's end that model predicts every node under 4 views
(clean; features dropped, edges dropped, feature noise, with `aug_drop`), nodes are chosen (`select_pseudo_labels`)
and the next round starts from the early checkpoint (`restart: early`, CPL) or from the round's model
(`restart: selected`). The exported model (`eval_model`) is the best-validation model over all rounds, so the
run's val/test metrics are validation-selected; the per-round test accuracy is only logged (the official code
reports its max over rounds: test-selected).

Logged per round (`ctx.log`, event "method" in metrics.jsonl): `round`, `val_acc` and `test_acc` of the round's
model, `added`, `pl_total`, `pl_acc_added` / `pl_acc` (accuracy of this round's / all pseudo-labels against the
true labels, which only this analysis reads), `consistency` (share of all nodes whose 3 augmented views agree
with the clean one, as logged by the official code) and `consistency_added`, `wrong` and
`wrong_next_to_wrong` (wrong pseudo-labels with a wrongly pseudo-labeled 1-hop neighbour). Everything that
decides the rest of a run (round, pseudo-label set, best accuracies, the model snapshots as submodules) is
checkpointed, so a run stopped mid-round resumes exactly.

Deviations from the official code, where it differs from the paper's description:
- `relabel_from: selected` (default) predicts with the latest round's model. The official loop loads the base
  model once before the loop and never reloads it (`model` in `main_node.py`), so all its rounds pseudo-label
  from the base model's views: `relabel_from: base` does that.
- Early stopping (patience 500 of at most 2000 epochs per round) is replaced by fixed `base_epochs` /
  `round_epochs` with the best-validation model kept, to fit a CPU budget.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch, Graph, Split
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput, hash_seed
from kdforge.errors import ConfigError
from kdforge.losses import (
    average_views,
    cautious_pl_loss,
    select_pseudo_labels,
    view_agreement,
    wrong_with_wrong_neighbour,
)
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class GraphPLParams(MethodParams):
    base_epochs: int = Field(200, gt=0, description="epochs of round 0 (labeled nodes only)")
    round_epochs: int = Field(100, gt=0, description="epochs of each pseudo-labeling round")
    top_k: int | None = Field(100, gt=0, description="nodes added per round (CPL --top: Cora 100, CiteSeer 70); "
                                                     "None: every node above the threshold")
    threshold: float = Field(0.0, ge=0, lt=1, description="confidence a node needs to be a candidate")
    views: Literal["clean", "multi"] = Field("clean", description="select on the clean prediction, or on the mean "
                                                                  "of the 4 views' logits (CPL)")
    consistent_only: bool = Field(False, description="only nodes whose 4 views agree are candidates (the paper's "
                                                     "wording; the official code selects on confidence alone)")
    aug_drop: float = Field(0.1, ge=0, lt=1, description="feature/edge drop rate and noise scale of the views "
                                                         "(CPL --aug_drop: Cora 0.1, CiteSeer 0.05)")
    restart: Literal["early", "selected"] = Field("selected", description="each round starts from the early "
                                                  "checkpoint (CPL) or from the previous round's selected model")
    early_epoch: int = Field(100, ge=0, description="epoch of round 0 whose weights are the early checkpoint")
    relabel_from: Literal["selected", "base"] = Field("selected", description="model that predicts pseudo-labels: "
                                                      "the latest round's, or round 0's (the official loop)")
    candidates: Literal["all", "unlabeled"] = Field("all", description="nodes that may be pseudo-labeled: all but "
                                                    "the training nodes (CPL), or those outside train/val/test")
    beta: float = Field(1.0, gt=0, description="loss = mean CE / beta (CPL weighted CE: beta 1/3)")


class GraphPseudoLabel(Method):
    """Rounds of pseudo-labeling on a graph; subclasses only change the defaults of `GraphPLParams`."""

    Params: ClassVar[type[MethodParams]] = GraphPLParams
    needs_teacher: ClassVar[bool] = False
    params: GraphPLParams

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        if setup.spec.kind != "graph":
            raise ConfigError(f"method {type(self).__name__}: pseudo-labeling here needs graph data, got "
                              f"{setup.spec.kind!r} data")
        # Snapshots of the student, checkpointed with it (submodules) and never trained.
        self.early, self.round_best, self.base, self.selected = (self._snapshot() for _ in range(4))
        self.round = 0
        self.round_best_val = -1.0
        self.best_val = -1.0
        self.pl_nodes = torch.zeros(0, dtype=torch.long)
        self.pl_labels = torch.zeros(0, dtype=torch.long)

    def _snapshot(self) -> nn.Module:
        copy_ = copy.deepcopy(self.student)
        copy_.requires_grad_(False)
        return copy_

    # ---- the engine's protocol ----------------------------------------------------------------------------
    def configure_optimizers(self, plan: Plan) -> dict[str, Optimization]:
        if plan.steps_per_epoch != 1:
            raise ConfigError(f"method {type(self).__name__}: data.batch_size must hold every training node (one "
                              "full-graph step per epoch, the pseudo-labels joining it); raise data.batch_size")
        return {"main": self.optimization(self.student.parameters(), plan)}

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        out = self.student(batch.x, *batch.extra)  # every node: the pseudo-labeled ones join the labeled batch
        labeled = batch.rows(out)
        nodes, labels = self.pl_nodes.to(out.device), self.pl_labels.to(out.device)
        loss = cautious_pl_loss(torch.cat([labeled, out[nodes]]), torch.cat([batch.labels, labels]),
                                beta=self.params.beta)
        ctx.optimize(loss)
        return StepOutput(terms={"pl_ce": loss}, logits=labeled)

    def on_epoch_end(self, ctx: StepContext) -> None:
        p, graph = self.params, _graph(ctx.data.train)
        val = _accuracy(self.student, graph, ctx.data.val)
        if val > self.round_best_val:  # strict, as the official `acc_val > best`
            self.round_best_val = val
            self.round_best.load_state_dict(self.student.state_dict())
        if self.round == 0 and ctx.epoch == min(p.early_epoch, p.base_epochs - 1):
            self.early.load_state_dict(self.student.state_dict())
        last = ctx.epoch + 1 == ctx.plan.epochs
        if last or self._round_ends(ctx.epoch):
            self._finish_round(ctx, graph, last)

    def eval_model(self) -> nn.Module:
        return self.selected

    def extra_state(self) -> dict[str, Any]:
        return {"round": self.round, "round_best_val": self.round_best_val, "best_val": self.best_val,
                "pl_nodes": self.pl_nodes, "pl_labels": self.pl_labels}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.round, self.round_best_val, self.best_val = state["round"], state["round_best_val"], state["best_val"]
        self.pl_nodes, self.pl_labels = state["pl_nodes"], state["pl_labels"]

    # ---- rounds -------------------------------------------------------------------------------------------
    def _round_ends(self, epoch: int) -> bool:
        done = epoch + 1 - self.params.base_epochs
        return done == 0 or (done > 0 and done % self.params.round_epochs == 0)

    def _finish_round(self, ctx: StepContext, graph: Graph, last: bool) -> None:
        record: dict[str, Any] = {"round": self.round, "val_acc": self.round_best_val,
                                  "test_acc": _accuracy(self.round_best, graph, ctx.data.test)}
        if self.round_best_val > self.best_val:  # rounds are chosen on validation nodes only
            self.best_val = self.round_best_val
            self.selected.load_state_dict(self.round_best.state_dict())
        if self.round == 0:
            self.base.load_state_dict(self.round_best.state_dict())
        if not last:
            record.update(self._add_pseudo_labels(ctx, graph))
            start = self.early if self.params.restart == "early" else self.round_best
            self.student.load_state_dict(start.state_dict())
            for opt in ctx.optimizers.values():  # the official code builds a fresh Adam for every round
                opt.optimizer.state.clear()
            self.round, self.round_best_val = self.round + 1, -1.0
        ctx.log(**record)

    @torch.no_grad()
    def _add_pseudo_labels(self, ctx: StepContext, graph: Graph) -> dict[str, float]:
        p = self.params
        model = self.base if p.relabel_from == "base" else self.round_best
        gen = torch.Generator().manual_seed(hash_seed(ctx.recipe.seed, f"pl-views-{self.round}"))
        views = _views(model, graph, p.aug_drop, gen, next(model.parameters()).device)
        agree = view_agreement(views)
        conf, label = average_views(views) if p.views == "multi" else F.softmax(views[0], 1).max(1)
        eligible = self._eligible(ctx, graph.num_nodes)
        if p.consistent_only:
            eligible &= agree.cpu()
        new = select_pseudo_labels(conf.cpu(), eligible, p.top_k, p.threshold)
        self.pl_nodes = torch.cat([self.pl_nodes, new])
        self.pl_labels = torch.cat([self.pl_labels, label.cpu()[new]])
        # Analysis only: the true labels of pseudo-labeled nodes never reach the loss.
        wrong = self.pl_labels != graph.y[self.pl_nodes]
        return {"added": len(new), "pl_total": len(self.pl_nodes), "pl_acc": _share(~wrong),
                "pl_acc_added": _share(~wrong[len(wrong) - len(new):]), "consistency": _share(agree),
                "consistency_added": _share(agree.cpu()[new]), "wrong": int(wrong.sum()),
                "wrong_next_to_wrong": wrong_with_wrong_neighbour(self.pl_nodes, wrong, graph.edge_index,
                                                                  graph.num_nodes)}

    def _eligible(self, ctx: StepContext, num_nodes: int) -> Tensor:
        eligible = torch.ones(num_nodes, dtype=torch.bool)
        excluded = [ctx.data.train.x, self.pl_nodes]
        if self.params.candidates == "unlabeled":
            excluded += [s.x for s in (ctx.data.val, ctx.data.test) if s is not None]
        for nodes in excluded:
            eligible[nodes] = False
        return eligible


def _graph(split: Split) -> Graph:
    assert split.graph is not None, "graph data carries its graph in every split"
    return split.graph


def _share(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else 0.0


@torch.no_grad()
def _accuracy(model: nn.Module, graph: Graph, split: Split | None) -> float:
    if split is None or split.y is None:
        return 0.0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = model(graph.x.to(device), graph.edge_index.to(device))
    model.train(was_training)
    return float((out[split.x.to(device)].argmax(1) == split.y.to(device)).float().mean())


@torch.no_grad()
def _views(model: nn.Module, graph: Graph, drop: float, gen: torch.Generator, device: torch.device) -> list[Tensor]:
    """The clean and 3 augmented predictions of official `multiview_pred`, in eval mode: features dropped at rate
    `drop` (kept ones scaled by 1/(1-drop), as F.dropout), int(drop * |E|) directed edges removed, and noise
    U(0,1) * std(X) * drop / 2 added to every feature."""
    x, edges = graph.x, graph.edge_index
    keep = torch.rand(edges.shape[1], generator=gen).argsort()[int(edges.shape[1] * drop):].sort().values
    dropped = x * (torch.rand(x.shape, generator=gen) >= drop) / (1 - drop)
    noisy = x + torch.rand(x.shape, generator=gen) * x.std() * drop / 2
    inputs = [(x, edges), (dropped, edges), (x, edges[:, keep]), (noisy, edges)]
    was_training = model.training
    model.eval()
    out = [model(a.to(device), b.to(device)) for a, b in inputs]
    model.train(was_training)
    return out


class PLParams(GraphPLParams):
    """Plain PL: the `top_k` most confident clean predictions each round; training continues from the round's
    selected model."""


class ThresholdPLParams(GraphPLParams):
    """Confidence-thresholded PL: every node above `threshold` each round (no cap)."""

    top_k: int | None = Field(None, gt=0, description="nodes added per round; None: every node above threshold")
    threshold: float = Field(0.9, ge=0, lt=1, description="confidence a node needs to be pseudo-labeled")


class CPLParams(GraphPLParams):
    """Cautious PL with the official defaults (`main_node.py` args, `run.sh` Cora settings)."""

    threshold: float = Field(0.01, ge=0, lt=1, description="confidence a node needs to be a candidate")
    views: Literal["clean", "multi"] = Field("multi", description="select on the mean of the 4 views' logits")
    restart: Literal["early", "selected"] = Field("early", description="fine-tune from the early checkpoint")
    beta: float = Field(1 / 3, gt=0, description="loss = mean CE / beta (official weighted CE, beta 1/3)")


@METHODS.register("pl")
class PlainPL(GraphPseudoLabel):
    """Plain self-training with pseudo-labels: most confident predictions first."""

    Params: ClassVar[type[MethodParams]] = PLParams


@METHODS.register("pl_threshold")
class ThresholdPL(GraphPseudoLabel):
    """Self-training with every prediction above a confidence threshold."""

    Params: ClassVar[type[MethodParams]] = ThresholdPLParams


@METHODS.register("cpl")
class CautiousPL(GraphPseudoLabel):
    """Cautious PL (Wang et al., NeurIPS 2023): multi-view confidence, top-k, fine-tuning from an early checkpoint."""

    Params: ClassVar[type[MethodParams]] = CPLParams
