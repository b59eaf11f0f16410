"""Pseudo-labeling on graphs (plain, thresholded, cautious PL): the loss and selection rules against line-by-line
ports of the official CPL code, the error analysis on hand-made graphs, the round mechanics, and a run stopped
mid-round that resumes bit-identical."""
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdforge import models
from kdforge.config.schema import ModelConfig, OptimConfig, RecipeConfig, ScheduleConfig, TrainConfig
from kdforge.data.types import DataBundle, DataSpec, Graph, Split
from kdforge.engine import Trainer
from kdforge.engine.seeding import seed_everything
from kdforge.errors import ConfigError
from kdforge.losses import (
    average_views,
    cautious_pl_loss,
    select_pseudo_labels,
    view_agreement,
    wrong_with_wrong_neighbour,
)
from kdforge.methods import METHODS, Setup
from kdforge.methods.graph_pl import _views

sys.path.insert(0, str(Path(__file__).parents[1]))
from support import Stop, stop_after  # noqa: E402


# ---- line-by-line ports of AcEbt/CPL@326fe67 -------------------------------------------------------------
def official_weighted_ce(output, labels, bald, beta, nclass):
    """utils.weighted_cross_entropy with sign=False after main_node.train's softmax (T = identity)."""
    output = torch.softmax(output, dim=1)
    bald = bald.clone() + 1e-6
    bald = bald / (torch.mean(bald) * beta)
    labels = F.one_hot(labels, nclass)
    loss = -torch.log(torch.sum(output * labels, dim=1))
    loss = torch.sum(loss * bald)
    return loss / labels.size()[0]


def official_select(confidence, idx_train_ag, threshold, top):
    """main_node.py's selection: confidence[idx_train_ag] = 0, threshold, then top-k when enough."""
    confidence = confidence.clone()
    confidence[idx_train_ag] = 0
    pl_idx = torch.where(confidence > threshold)[0]
    if len(pl_idx) >= top:
        _, pl_idx = torch.topk(confidence, top)
    return pl_idx


def test_cautious_loss_equals_the_official_weighted_ce():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 4), torch.randint(0, 4, (12,))
    ones, weights = torch.ones(12), torch.rand(12) * 3
    assert torch.allclose(cautious_pl_loss(logits, labels), official_weighted_ce(logits, labels, ones, 1 / 3, 4))
    assert torch.allclose(cautious_pl_loss(logits, labels, weights, beta=0.5),
                          official_weighted_ce(logits, labels, weights, 0.5, 4))
    assert torch.allclose(cautious_pl_loss(logits, labels, beta=1.0), F.cross_entropy(logits, labels))


def test_cautious_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p(class 0) = 1/2 and 3/4
    value = cautious_pl_loss(logits, torch.tensor([0, 0]), torch.tensor([1.0, 3.0]), beta=1.0)
    # weights / mean(weights) = 0.5, 1.5
    assert value.item() == pytest.approx((0.5 * math.log(2) + 1.5 * math.log(4 / 3)) / 2, rel=1e-5)


def test_selection_matches_the_official_loop_and_limit_cases():
    conf = torch.tensor([0.9, 0.2, 0.95, 0.5, 0.005, 0.7])
    trained = torch.tensor([False, False, True, False, False, False])
    for top in (1, 2, 3, 4, 6):
        ours = select_pseudo_labels(conf, ~trained, top, 0.01)
        assert set(ours.tolist()) == set(official_select(conf, trained, 0.01, top).tolist())
    assert select_pseudo_labels(conf, ~trained, 2, 0.01).tolist() == [0, 5]  # most confident first
    assert select_pseudo_labels(conf, ~trained, 10, 0.01).tolist() == [0, 5, 3, 1]  # fewer candidates than k
    assert select_pseudo_labels(conf, ~trained, None, 0.6).tolist() == [0, 5]  # thresholded PL: no cap
    assert select_pseudo_labels(conf, torch.zeros(6, dtype=torch.bool), 3, 0.0).numel() == 0


def test_views_mean_logits_and_agreement():
    clean = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    other = torch.tensor([[0.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    conf, label = average_views([clean, other])
    mean = (clean + other) / 2
    assert torch.allclose(conf, F.softmax(mean, 1).max(1).values) and torch.equal(label, mean.argmax(1))
    c1, l1 = average_views([clean] * 4)  # identical views: the clean prediction
    assert torch.allclose(c1, F.softmax(clean, 1).max(1).values) and torch.equal(l1, clean.argmax(1))
    # node 0: argmax of `other` is 0 (tie broken to the first) = clean; node 2 disagrees
    assert view_agreement([clean, other]).tolist() == [True, True, False]


def test_wrong_next_to_wrong_counts_clustered_errors():
    # path 0-1-2-3-4 (both directions) plus a self-loop on 4; pseudo-labeled 0, 1, 3, 4; 0, 1 and 4 wrong
    edges = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 4], [1, 0, 2, 1, 3, 2, 4, 3, 4]])
    nodes, wrong = torch.tensor([0, 1, 3, 4]), torch.tensor([True, True, False, True])
    assert wrong_with_wrong_neighbour(nodes, wrong, edges, 5) == 2  # 0 and 1 are neighbours; 4 only of itself
    assert wrong_with_wrong_neighbour(nodes, torch.zeros(4, dtype=torch.bool), edges, 5) == 0


def test_augmented_views_drop_exactly_and_add_bounded_noise():
    class Probe(torch.nn.Module):  # records what it is called with
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = []

        def forward(self, x, edge_index):
            self.calls.append((x, edge_index))
            return x[:, :2]

    x = torch.rand(50, 8) + 0.5
    graph = Graph(x=x, edge_index=torch.randint(0, 50, (2, 200)), y=torch.zeros(50, dtype=torch.long))
    probe = Probe()
    _views(probe, graph, 0.1, torch.Generator().manual_seed(0), torch.device("cpu"))
    (x0, e0), (xd, e1), (x2, e2), (xn, e3) = probe.calls
    assert torch.equal(x0, x) and torch.equal(e0, graph.edge_index) and torch.equal(e1, e0) and torch.equal(e3, e0)
    kept = (xd != 0)
    assert torch.allclose(xd[kept], x[kept] / 0.9) and 0 < (~kept).sum() < 0.25 * x.numel()
    assert e2.shape[1] == 200 - int(200 * 0.1) and torch.equal(x2, x)
    noise = xn - x
    assert (noise >= 0).all() and (noise <= x.std() * 0.1 / 2 + 1e-6).all() and noise.std() > 0


# ---- the method on a small synthetic graph -----------------------------------------------------------------
def two_block_graph(seed: int = 0) -> DataBundle:
    """3 classes x 40 nodes; dense intra-class, sparse inter-class edges; noisy class-mean features."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(40)
    same = y[:, None] == y[None, :]
    p = torch.where(same, torch.tensor(0.12), torch.tensor(0.01))
    adj = torch.rand(120, 120, generator=gen) < p
    adj = (adj | adj.T) & ~torch.eye(120, dtype=torch.bool)
    x = F.one_hot(y, 3).float().repeat(1, 4) + 1.5 * torch.randn(120, 12, generator=gen)
    graph = Graph(x=x, edge_index=adj.nonzero().T.contiguous(), y=y)
    perm = torch.randperm(120, generator=gen)
    train = torch.cat([perm[y[perm] == c][:3] for c in range(3)]).sort().values
    rest = perm[~torch.isin(perm, train)]
    val, test = rest[:30].sort().values, rest[30:].sort().values
    part = lambda nodes: Split(x=nodes, y=y[nodes], graph=graph)  # noqa: E731
    spec = DataSpec(name="blocks", input_shape=(12,), num_classes=3, kind="graph", num_nodes=120)
    return DataBundle(spec=spec, train=part(train), val=part(val), test=part(test))


def make_trainer(run_dir, name="cpl", epochs=40, callbacks=(), **params):
    bundle = two_block_graph()
    seed_everything(0)
    student = models.build(ModelConfig(name="gcn", params={"hidden": 16, "dropout": 0.3}), bundle.spec)
    cls = METHODS[name]
    defaults = {"base_epochs": 16, "round_epochs": 8, "top_k": 10, "early_epoch": 5}
    method = cls(student, None, cls.Params(**{**defaults, **params}), Setup.for_data(bundle.spec, bundle.train))
    recipe = RecipeConfig(seed=0, optim=OptimConfig(name="adam", lr=0.02), schedule=ScheduleConfig(name="constant"),
                          train=TrainConfig(epochs=epochs, progress=False, tensorboard=False, eval_every=epochs))
    return Trainer(method, bundle, recipe, run_dir, batch_size=len(bundle.train), callbacks=callbacks)


def _rounds(run_dir):
    import json

    return [r for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "method"]


@pytest.mark.parametrize("name", ["pl", "cpl"])
def test_rounds_add_top_k_new_non_training_nodes(tmp_path, name):
    t = make_trainer(tmp_path / "run", name)
    t.fit()
    m = t.method
    rounds = _rounds(tmp_path / "run")
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]  # rounds end at epochs 15, 23, 31 and 39
    assert [r.get("added") for r in rounds] == [10, 10, 10, None]  # the last round adds nothing
    assert len(m.pl_nodes) == 30 and len(m.pl_nodes.unique()) == 30
    assert not torch.isin(m.pl_nodes, t.data.train.x).any()
    truth = t.data.train.graph.y
    assert rounds[-2]["pl_acc"] == pytest.approx(float((m.pl_labels == truth[m.pl_nodes]).float().mean()))
    assert all(0 <= r["consistency"] <= 1 and r["wrong_next_to_wrong"] <= r["wrong"] for r in rounds[:-1])
    # the exported model is the best-validation round's
    best = max(rounds, key=lambda r: r["val_acc"])
    assert m.best_val == best["val_acc"]
    assert t.method.eval_model() is m.selected


def test_cpl_restarts_from_the_early_checkpoint(tmp_path):
    t = make_trainer(tmp_path / "run", "cpl", epochs=17)  # round 0 ends at epoch 15; epoch 16 starts round 1
    t.fit()
    early = t.method.early.state_dict()
    # one step of round 1 moved the student away from the early weights, not from round 0's selected ones
    moved_early = max((t.method.student.state_dict()[k] - early[k]).abs().max() for k in early)
    moved_best = max((t.method.student.state_dict()[k] - t.method.base.state_dict()[k]).abs().max() for k in early)
    assert moved_early < moved_best


def test_unlabeled_candidates_exclude_val_and_test(tmp_path):
    t = make_trainer(tmp_path / "run", "pl", epochs=24, candidates="unlabeled", top_k=100)
    t.fit()
    # this graph puts every node in train, val or test: nothing may be pseudo-labeled
    assert len(t.method.pl_nodes) == 0


def test_stopped_mid_round_resumes_bit_identical(tmp_path):
    full = make_trainer(tmp_path / "full", "cpl")
    full.fit()
    cut = make_trainer(tmp_path / "cut", "cpl", callbacks=(stop_after(19),))  # inside round 1 (epochs 16..23)
    with pytest.raises(Stop):
        cut.fit()
    resumed = make_trainer(tmp_path / "cut", "cpl")
    result = resumed.fit(resume=True)
    assert result.resumed_from == 19
    a, b = full.method.trainable().state_dict(), resumed.method.trainable().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(full.method.pl_nodes, resumed.method.pl_nodes)
    assert torch.equal(full.method.pl_labels, resumed.method.pl_labels)
    assert full.method.extra_state()["best_val"] == resumed.method.extra_state()["best_val"]


def test_graph_pl_refuses_minibatches_and_other_data(tmp_path):
    bundle = two_block_graph()
    student = models.build(ModelConfig(name="gcn"), bundle.spec)
    method = METHODS["pl"](student, None, METHODS["pl"].Params(), Setup.for_data(bundle.spec, bundle.train))
    recipe = RecipeConfig(optim=OptimConfig(name="adam", lr=0.01), train=TrainConfig(epochs=2, progress=False))
    with pytest.raises(ConfigError, match="data.batch_size must hold every training node"):
        Trainer(method, bundle, recipe, tmp_path / "r", batch_size=4)
    spec = DataSpec(name="v", input_shape=(12,), num_classes=3)
    tensors = Split(x=torch.randn(8, 12), y=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="needs graph data"):
        METHODS["cpl"](models.build(ModelConfig(name="mlp"), spec), None, METHODS["cpl"].Params(),
                       Setup.for_data(spec, tensors))


def test_relabel_from_base_takes_the_base_models_next_most_confident_nodes(tmp_path):
    """The official loop's behaviour: every round pseudo-labels from round 0's model, so after 3 rounds of 10 the
    set is that model's 30 most confident non-training nodes (clean view), whatever later rounds learned."""
    t = make_trainer(tmp_path / "run", "pl", relabel_from="base")
    t.fit()
    m, graph = t.method, t.data.train.graph
    with torch.no_grad():
        probs = F.softmax(m.base.eval()(graph.x, graph.edge_index), 1)
    eligible = torch.ones(120, dtype=torch.bool)
    eligible[t.data.train.x] = False
    expected = select_pseudo_labels(probs.max(1).values, eligible, 30, 0.0)
    assert set(m.pl_nodes.tolist()) == set(expected.tolist())
    assert torch.equal(m.pl_labels, probs.argmax(1)[m.pl_nodes])


def test_consistent_only_adds_nodes_whose_views_agree(tmp_path):
    t = make_trainer(tmp_path / "run", "cpl", consistent_only=True, aug_drop=0.5)
    t.fit()
    added = [r for r in _rounds(tmp_path / "run") if "added" in r]
    assert added and all(r["consistency_added"] == 1.0 for r in added if r["added"])
    assert any(r["consistency"] < 1.0 for r in added)  # some nodes disagreed and were passed over
