"""Self-training with pseudo-labels on one graph, in rounds the method owns: plain PL (`pl`), confidence-thresholded
PL (`pl_threshold`) and cautious PL (`cpl`, Wang et al., "Deep Insights into Noisy Pseudo Labeling on Graph Data",
NeurIPS 2023; official code AcEbt/CPL@326fe67 `main_node.py`, `utils.py`).

A run's epochs are cut into rounds: round 0 (at most `base_epochs`) trains on the labeled nodes; each of the
`rounds` later ones (at most `round_epochs`) on labeled + pseudo-labeled nodes. With `patience` a round ends early
once that many epochs in a row brought no strictly better validation accuracy (the official `train()`,
main_node.py:74-116). Within a round the best-validation model is kept. At the round's end a model predicts every
node under 4 views (clean; features dropped, edges dropped, feature noise, with `aug_drop`: `cpl_view_inputs`),
nodes are chosen (`select_pseudo_labels`) and the next round starts from the epoch-`early_epoch` weights of round
0 (`restart: early`, CPL) or from the round's model (`restart: selected`), with a fresh optimizer state. The
predicting model is round 0's (`relabel_from: base`, CPL's default: main_node.py:193-203 loads it once and never
reloads it) or the latest round's (`relabel_from: selected`). Once every round is done, the remaining epochs of
`train.epochs` do nothing, so `train.epochs` is an upper bound (CPL: (rounds + 1) * 2000).

The exported model (`eval_model`) is the best-validation round's model, so the run's val/test metrics are
validation-selected. Logged per round (`ctx.log`, event "method" in metrics.jsonl): `round`, `epochs` (the round's
length), `val_acc` and `test_acc` of the round's model, `added`, `conf_min_added` (their lowest confidence, as the
official log), `pl_total`, `pl_acc_added` / `pl_acc` (accuracy of this round's / all pseudo-labels against the true
labels, which only this analysis reads), `consistency` (share of all nodes whose 3 augmented views agree with the
clean one, as the official log) and `consistency_added`, `wrong` and `wrong_next_to_wrong` (wrong pseudo-labels
with a wrongly pseudo-labeled 1-hop neighbour). At the end: `acc_val_selected` (test accuracy of the
best-validation round, = summary.json's test top1), `acc_test_selected` (max test accuracy over the PL rounds,
round 0's when none ran: the official figure, main_node.py:235-236), `acc_round0`, `selected_round`, `rounds_run`,
`pl_acc_final` and `pl_total_final`. Everything that decides the rest of a run (round, its epoch and patience
counters, the pseudo-label set, the accuracies so far, the model snapshots as submodules) is checkpointed, so a run
stopped mid-round resumes exactly.

Deviations from AcEbt/CPL@326fe67 with the official settings (configs/{cora,citeseer}_cpl_official.yaml, whose
GCN is the official one: `norm: cpl`, `init: pygcn`, `input_dropout: false`, see `models/gnn.py`):
- Graph: kdforge's Planetoid graph drops self-loops (torch_geometric's `read_planetoid_data`). DGL keeps the 124
  self-loops of CiteSeer's raw graph, so in the official GCN those nodes have self weight 3 (raw loop +
  `dgl.add_self_loop` + `preprocess_adj`'s identity, data.py:58,123), here 2. Cora has none.
- Random streams: dropout masks, the views' masks, noise and edge choice come from kdforge's seeded generators
  (views: one per round, `hash_seed(seed, "pl-views-<round>")`), not the official global numpy/torch state; the
  model's initial weights differ with them.
- Loss: `cautious_pl_loss` uses log_softmax (the official -log(softmax), utils.py:97, is inf where a softmax
  underflows) and the mean runs over labeled then pseudo-labeled nodes (official: node order), same value.
- A round that selects no node still trains (official main_node.py:216 skips training and its test entry).
- Round 0 shorter than `early_epoch` (only with `patience` < `early_epoch`): its last weights are the early
  checkpoint (the official code would reload a stale `./save_model/tmp.pth`, shared by all runs in one folder).
- Reported figures: the official log has the max test accuracy over PL rounds only; `acc_val_selected` is ours.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdforge.data.types import Batch, Graph, Split
from kdforge.data.seeds import hash_seed
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput
from kdforge.errors import ConfigError
from kdforge.losses import (
    average_views,
    cautious_pl_loss,
    cpl_view_inputs,
    select_pseudo_labels,
    view_agreement,
    wrong_with_wrong_neighbour,
)
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.methods.checks import require_graph
from kdforge.registry import METHODS
from kdforge.teachers.base import TeacherSource


class GraphPLParams(MethodParams):
    base_epochs: int = Field(200, gt=0, description="epochs of round 0 (labeled nodes only); with `patience`, at "
                                                    "most (CPL --epochs 2000)")
    round_epochs: int = Field(100, gt=0, description="epochs of each pseudo-labeling round; with `patience`, at most "
                                                     "(CPL --epochs_ft 2000)")
    patience: int | None = Field(None, gt=0, description="end a round after this many epochs in a row without a "
                                 "strictly better validation accuracy (CPL --patience 500); None: full-length rounds")
    rounds: int | None = Field(None, ge=0, description="pseudo-labeling rounds after round 0 (CPL --iter: Cora 25, "
                               "CiteSeer 30; 0: round 0 alone); later epochs of train.epochs do nothing. None: "
                               "until train.epochs")
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
    early_epoch: int = Field(100, ge=0, description="epoch of round 0 whose weights are the early checkpoint "
                                                    "(CPL: 100, counted from 0)")
    relabel_from: Literal["selected", "base"] = Field("selected", description="model that predicts pseudo-labels: "
                                                      "the latest round's, or round 0's (CPL's official loop)")
    candidates: Literal["all", "unlabeled"] = Field("all", description="nodes that may be pseudo-labeled: all but "
                                                    "the training nodes (CPL), or those outside train/val/test")
    beta: float = Field(1.0, gt=0, description="loss = mean CE / beta (CPL weighted CE: beta 1/3)")


GP = TypeVar("GP", bound=GraphPLParams)


class GraphPseudoLabel(Method[GP]):
    """Rounds of pseudo-labeling on a graph; subclasses only change the defaults of `GraphPLParams`."""

    needs_teacher: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: TeacherSource | None, params: MethodParams, setup: Setup) -> None:
        super().__init__(student, teacher, params, setup)
        require_graph(setup.spec, f"method {type(self).__name__}: pseudo-labeling here")
        # Snapshots of the student, checkpointed with it (submodules) and never trained.
        self.early, self.round_best, self.base, self.selected = (self._snapshot() for _ in range(4))
        self.round, self.round_epoch, self.stale, self.done = 0, 0, 0, False
        self.round_best_val = -1.0
        self.best_val, self.best_round = -1.0, 0
        self.test_accs: list[float] = []  # per finished round
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
        if self.done:  # every round has finished: the rest of train.epochs is idle
            return StepOutput(terms={})
        out = self.student(batch.x, *batch.extra)  # every node: the pseudo-labeled ones join the labeled batch
        labeled = batch.rows(out)
        nodes, labels = self.pl_nodes.to(out.device), self.pl_labels.to(out.device)
        loss = cautious_pl_loss(torch.cat([labeled, out[nodes]]), torch.cat([batch.labels, labels]),
                                beta=self.params.beta)
        ctx.optimize(loss)
        return StepOutput(terms={"pl_ce": loss}, logits=labeled)

    def on_epoch_end(self, ctx: StepContext) -> None:
        if self.done:
            return
        p, graph = self.params, _graph(ctx.data.train)
        val = _accuracy(self.student, graph, ctx.data.val)
        if self.round == 0 and self.round_epoch == p.early_epoch:  # the official epoch == 100 (main_node.py:97)
            self.early.load_state_dict(self.student.state_dict())
        self.round_epoch += 1
        if val > self.round_best_val:  # strict, as the official `acc_val > best`
            self.round_best_val, self.stale = val, 0
            self.round_best.load_state_dict(self.student.state_dict())
        else:
            self.stale += 1
        longest = p.base_epochs if self.round == 0 else p.round_epochs
        ends = self.round_epoch == longest or (p.patience is not None and self.stale >= p.patience)
        last = ctx.epoch + 1 == ctx.plan.epochs
        if ends or last:
            self._finish_round(ctx, graph, last)

    def eval_model(self) -> nn.Module:
        return self.selected

    def extra_state(self) -> dict[str, Any]:
        return {"round": self.round, "round_epoch": self.round_epoch, "stale": self.stale, "done": self.done,
                "round_best_val": self.round_best_val, "best_val": self.best_val, "best_round": self.best_round,
                "test_accs": list(self.test_accs), "pl_nodes": self.pl_nodes, "pl_labels": self.pl_labels}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.round, self.round_epoch, self.stale = state["round"], state["round_epoch"], state["stale"]
        self.done, self.round_best_val = state["done"], state["round_best_val"]
        self.best_val, self.best_round = state["best_val"], state["best_round"]
        self.test_accs = list(state["test_accs"])
        self.pl_nodes, self.pl_labels = state["pl_nodes"], state["pl_labels"]

    # ---- rounds -------------------------------------------------------------------------------------------
    def _finish_round(self, ctx: StepContext, graph: Graph, last: bool) -> None:
        p = self.params
        test = _accuracy(self.round_best, graph, ctx.data.test)
        self.test_accs.append(test)
        record: dict[str, Any] = {"round": self.round, "epochs": self.round_epoch, "val_acc": self.round_best_val,
                                  "test_acc": test}
        if self.round_best_val > self.best_val:  # rounds are chosen on validation nodes only
            self.best_val, self.best_round = self.round_best_val, self.round
            self.selected.load_state_dict(self.round_best.state_dict())
        if self.round == 0:
            self.base.load_state_dict(self.round_best.state_dict())
            if self.round_epoch <= p.early_epoch:  # round 0 ended before the early epoch: its last weights
                self.early.load_state_dict(self.student.state_dict())
        self.done = last or (p.rounds is not None and self.round >= p.rounds)
        if not self.done:
            record.update(self._add_pseudo_labels(ctx, graph))
            start = self.early if p.restart == "early" else self.round_best
            self.student.load_state_dict(start.state_dict())
            for opt in ctx.optimizers.values():  # the official code builds a fresh Adam for every round
                opt.optimizer.state.clear()
            self.round, self.round_epoch, self.stale, self.round_best_val = self.round + 1, 0, 0, -1.0
        ctx.log(**record)
        if self.done:
            ctx.log(**self._final_stats(graph))

    def _final_stats(self, graph: Graph) -> dict[str, float]:
        """The run's figures: both selections of a round, round 0, and the final pseudo-label set."""
        later = self.test_accs[1:] or self.test_accs[:1]
        wrong = self.pl_labels != graph.y[self.pl_nodes]
        return {"acc_val_selected": self.test_accs[self.best_round], "acc_test_selected": max(later),
                "acc_round0": self.test_accs[0], "selected_round": self.best_round,
                "rounds_run": len(self.test_accs) - 1, "pl_acc_final": _share(~wrong),
                "pl_total_final": len(self.pl_nodes)}

    @torch.no_grad()
    def _add_pseudo_labels(self, ctx: StepContext, graph: Graph) -> dict[str, float]:
        p = self.params
        model = self.base if p.relabel_from == "base" else self.round_best
        gen = torch.Generator().manual_seed(hash_seed(ctx.recipe.seed, f"pl-views-{self.round}"))
        views = _predict(model, cpl_view_inputs(graph.x, graph.edge_index, p.aug_drop, gen))
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
        return {"added": len(new), "conf_min_added": float(conf.cpu()[new].min()) if len(new) else 0.0,
                "pl_total": len(self.pl_nodes), "pl_acc": _share(~wrong),
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
    out = _predict(model, [(graph.x, graph.edge_index)])[0]
    return float((out[split.x.to(device)].argmax(1) == split.y.to(device)).float().mean())


@torch.no_grad()
def _predict(model: nn.Module, inputs: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """The model's logits on each (features, edge_index), in eval mode (as the official `multiview_pred` after
    `model.eval()`), its train/eval mode restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(x.to(device), edges.to(device)) for x, edges in inputs]
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
    """Cautious PL with the official defaults (`main_node.py` args, `run.sh` Cora settings); the official schedule
    (2000-epoch rounds with patience 500, 25 or 30 rounds, lr 1e-3) is in configs/*_cpl_official.yaml."""

    threshold: float = Field(0.01, ge=0, lt=1, description="confidence a node needs to be a candidate")
    views: Literal["clean", "multi"] = Field("multi", description="select on the mean of the 4 views' logits")
    restart: Literal["early", "selected"] = Field("early", description="fine-tune from the early checkpoint")
    relabel_from: Literal["selected", "base"] = Field("base", description="model that predicts pseudo-labels: "
                                                      "round 0's (the official loop, main_node.py:193-203), or "
                                                      "the latest round's (an ablation)")
    beta: float = Field(1 / 3, gt=0, description="loss = mean CE / beta (official weighted CE, beta 1/3)")


@METHODS.register("pl")
class PlainPL(GraphPseudoLabel[PLParams]):
    """Plain self-training with pseudo-labels: most confident predictions first."""



@METHODS.register("pl_threshold")
class ThresholdPL(GraphPseudoLabel[ThresholdPLParams]):
    """Self-training with every prediction above a confidence threshold."""



@METHODS.register("cpl")
class CautiousPL(GraphPseudoLabel[CPLParams]):
    """Cautious PL (Wang et al., NeurIPS 2023): multi-view confidence, top-k, fine-tuning from an early checkpoint."""

