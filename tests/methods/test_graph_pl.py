"""Pseudo-labeling on graphs (plain, thresholded, cautious PL): the loss, the selection rule, the views, the GCN's
adjacency and early stopping against line-by-line ports of the official CPL code (AcEbt/CPL@326fe67), the error
analysis on hand-made graphs, the round mechanics, and runs stopped mid-round (and after their last round) that
resume bit-identical."""
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdforge import models
from kdforge.data.types import DataBundle, DataSpec, Graph, Split
from kdforge.data import Batches
from kdforge.engine import Trainer
from kdforge.engine.seeding import seed_everything
from kdforge.errors import ConfigError
from kdforge.losses import (
    average_views,
    cautious_pl_loss,
    cpl_view_inputs,
    select_pseudo_labels,
    view_agreement,
    wrong_with_wrong_neighbour,
)
from kdforge.methods import METHODS, Setup
from kdforge.methods import graph_pl
from kdforge.models.gnn import NormalizedAdjacency
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe, ScheduleSettings
from kdforge.models import ModelSpec

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


def official_adjacency(edges, num_nodes):
    """data.py:68-72 and 119-136 on a DGL graph's edge list (self-loops included): A[u, v] counts edges u -> v
    (networkx sums parallel ones), A + I, then D^-1/2 A^T D^-1/2 with D the row sums."""
    import numpy as np
    import scipy.sparse as sp

    src, dst = edges.numpy()
    adj = sp.coo_matrix((np.ones(len(src)), (src, dst)), shape=(num_nodes, num_nodes)).tocsr()
    adj = sp.coo_matrix(adj + sp.eye(num_nodes))
    d_inv_sqrt = np.power(np.array(adj.sum(1)), -0.5).flatten()
    d_inv_sqrt[np.isinf(d_inv_sqrt)] = 0.0
    d = sp.diags(d_inv_sqrt)
    return torch.tensor(adj.dot(d).transpose().dot(d).toarray(), dtype=torch.float)


def random_graph(n=30, p=0.15, seed=0):
    gen = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=gen) < p
    adj = (adj | adj.T) & ~torch.eye(n, dtype=torch.bool)
    return torch.rand(n, 8, generator=gen) + 0.5, adj.nonzero().T.contiguous()


def test_cpl_views_drop_exactly_and_add_bounded_noise():
    x, edges = random_graph()
    n, e = x.shape[0], edges.shape[1]
    (x0, e0), (xd, e1), (x2, e2), (xn, e3) = cpl_view_inputs(x, edges, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(x0, x) and torch.equal(e0, edges) and torch.equal(e1, edges) and torch.equal(e3, edges)
    kept = xd != 0
    assert torch.allclose(xd[kept], x[kept] / 0.9) and 0 < (~kept).sum() < 0.25 * x.numel()
    assert torch.equal(x2, x)
    loops = e2[0] == e2[1]
    real = e2[:, ~loops]
    assert {tuple(c) for c in real.T.tolist()} <= {tuple(c) for c in edges.T.tolist()}
    # of the |E| + N edges of the official graph (self-loops added), int(0.1 * (|E| + N)) are gone; a gone
    # self-loop is written as an explicit (i, i) edge
    assert (e - real.shape[1]) + int(loops.sum()) == int(0.1 * (e + n))
    noise = xn - x
    assert (noise >= 0).all() and (noise <= x.std() * 0.1 / 2 + 1e-6).all() and noise.std() > 0


def test_cpl_adjacency_equals_the_official_one_on_full_and_edge_dropped_graphs():
    x, edges = random_graph()
    n = x.shape[0]
    loops = torch.arange(n).expand(2, -1)
    full = NormalizedAdjacency("cpl")(edges, n).to_dense()
    assert torch.allclose(full, official_adjacency(torch.cat([edges, loops], 1), n), atol=1e-6)
    for seed in range(3):  # a view: directed edges and self-loops removed, read back in the official encoding
        view = cpl_view_inputs(x, edges, 0.3, torch.Generator().manual_seed(seed))[2][1]
        lost = view[0, view[0] == view[1]]
        present = torch.ones(n, dtype=torch.bool)
        present[lost] = False
        dgl_edges = torch.cat([view[:, view[0] != view[1]], loops[:, present]], 1)
        ours = NormalizedAdjacency("cpl")(view, n).to_dense()
        assert torch.allclose(ours, official_adjacency(dgl_edges, n), atol=1e-6)
    # the default normalization is torch_geometric's (self weight 1, in-degrees), unchanged
    assert not torch.allclose(NormalizedAdjacency()(edges, n).to_dense(), full)


def test_official_gcn_forward_and_init():
    """The GCN with norm=cpl, init=pygcn, no input dropout computes models.py GCN.forward: gc2(dropout(relu(
    gc1(x, adj))), adj) with GraphConvolution = adj @ (x @ W) + b; its init is pygcn's uniform(+-1/sqrt(out))."""
    x, edges = random_graph()
    spec = DataSpec(name="g", input_shape=(8,), num_classes=3, kind="graph", num_nodes=30)
    torch.manual_seed(0)
    gcn = models.build(ModelSpec(name="gcn", params={"hidden": 400, "dropout": 0.3, "input_dropout": False,
                                                       "norm": "cpl", "init": "pygcn"}), spec).eval()
    adj = official_adjacency(torch.cat([edges, torch.arange(30).expand(2, -1)], 1), 30)
    w1, b1, w2, b2 = gcn.conv1.lin.weight.T, gcn.conv1.bias, gcn.conv2.lin.weight.T, gcn.conv2.bias
    expected = adj @ (torch.relu(adj @ (x @ w1) + b1) @ w2) + b2
    ours = gcn(x, edges)
    assert torch.allclose(ours, expected, atol=1e-5)
    # gradients too (the fast path's backward reuses cached transposes of the adjacency)
    grads = torch.autograd.grad(ours.square().sum(), [gcn.conv1.lin.weight, gcn.conv2.bias])
    ref = torch.autograd.grad(expected.square().sum(), [gcn.conv1.lin.weight, gcn.conv2.bias])
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads, ref))
    for w, fan_out in ((w1, 400), (b1, 400), (w2, 3), (b2, 3)):
        bound = 1 / math.sqrt(fan_out)
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert w1.std().item() == pytest.approx(1 / math.sqrt(400) / math.sqrt(3), rel=0.02)  # uniform, not glorot


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


def make_trainer(run_dir, name="cpl", epochs=40, callbacks=(), checkpoint_every=1, **params):
    bundle = two_block_graph()
    seed_everything(0)
    student = models.build(ModelSpec(name="gcn", params={"hidden": 16, "dropout": 0.3}), bundle.spec)
    cls = METHODS[name]
    defaults = {"base_epochs": 16, "round_epochs": 8, "top_k": 10, "early_epoch": 5}
    method = cls(student, None, cls.Params(**{**defaults, **params}), Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(seed=0, optim=OptimSettings(name="adam", lr=0.02), schedule=ScheduleSettings(name="constant"),
                    train=LoopSettings(epochs=epochs, progress=False, tensorboard=False, eval_every=epochs,
                                            checkpoint_every=checkpoint_every))
    return Trainer(method, Batches(bundle, len(bundle.train)), recipe, run_dir, callbacks=callbacks)


def _events(run_dir):
    import json

    return [r for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "method"]


def _rounds(run_dir):
    """The per-round records (the run's final figures are the other method event)."""
    return [r for r in _events(run_dir) if "round" in r]


def _final(run_dir):
    return [r for r in _events(run_dir) if "acc_val_selected" in r][-1]


@pytest.mark.parametrize("name", ["pl", "cpl"])
def test_rounds_add_top_k_new_non_training_nodes(tmp_path, name):
    t = make_trainer(tmp_path / "run", name)
    result = t.fit()
    m = t.method
    rounds = _rounds(tmp_path / "run")
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]  # rounds end at epochs 15, 23, 31 and 39
    assert [r["epochs"] for r in rounds] == [16, 8, 8, 8]
    assert [r.get("added") for r in rounds] == [10, 10, 10, None]  # the last round adds nothing
    assert len(m.pl_nodes) == 30 and len(m.pl_nodes.unique()) == 30
    assert not torch.isin(m.pl_nodes, t.data.train.x).any()
    truth = t.data.train.graph.y
    assert rounds[-2]["pl_acc"] == pytest.approx(float((m.pl_labels == truth[m.pl_nodes]).float().mean()))
    assert all(0 <= r["consistency"] <= 1 and r["wrong_next_to_wrong"] <= r["wrong"] for r in rounds[:-1])
    # the exported model is the best-validation round's (the first of equals), and the final figures say so
    best = max(rounds, key=lambda r: r["val_acc"])
    assert m.best_val == best["val_acc"] and t.method.eval_model() is m.selected
    final = _final(tmp_path / "run")
    assert final["selected_round"] == best["round"]
    assert final["acc_val_selected"] == best["test_acc"] == pytest.approx(result.test["top1"])
    assert final["acc_test_selected"] == max(r["test_acc"] for r in rounds[1:])  # the official figure
    assert final["acc_round0"] == rounds[0]["test_acc"]
    assert final["rounds_run"] == 3 and final["pl_total_final"] == 30
    assert final["pl_acc_final"] == rounds[-2]["pl_acc"]


def test_cpl_defaults_are_the_official_loop():
    p = METHODS["cpl"].Params()
    assert (p.relabel_from, p.restart, p.views, p.threshold, p.early_epoch) == ("base", "early", "multi", 0.01, 100)
    assert p.beta == pytest.approx(1 / 3) and not p.consistent_only and p.candidates == "all"
    assert METHODS["pl"].Params().relabel_from == "selected"


def test_cpl_restarts_every_round_from_the_weights_after_early_epoch(tmp_path):
    snapshots = {}

    def keep(epoch, record):  # runs after on_epoch_end: the student as trained by epochs 0..epoch
        snapshots[epoch] = {k: v.clone() for k, v in t.method.student.state_dict().items()}

    t = make_trainer(tmp_path / "run", "cpl", epochs=25, callbacks=(keep,))
    t.fit()
    early = t.method.early.state_dict()
    assert all(torch.equal(early[k], snapshots[5][k]) for k in early)  # early_epoch 5, counted from 0
    # round 1 (epochs 16..23) and round 2 (24..) started from it: after round 1 ended the student was reset
    assert all(torch.equal(early[k], snapshots[23][k]) for k in early)
    assert not all(torch.equal(early[k], snapshots[16][k]) for k in early)


def official_round_length(vals, patience, epochs):
    """main_node.py:74-116: the epochs a round runs, given the validation accuracy after each of its epochs."""
    best, bad_counter = 0, 0
    for epoch in range(epochs):
        if vals[epoch] > best:
            best, bad_counter = vals[epoch], 0
        else:
            bad_counter += 1
        if bad_counter == patience:
            break
    return epoch + 1


def test_early_stopping_ends_rounds_as_the_official_loop_then_idles(tmp_path, monkeypatch):
    """Scripted validation accuracies per round: each round's length is the official loop's, `rounds` PL rounds
    run, and the remaining epochs of train.epochs leave the model untouched."""
    script = {0: [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7],  # best at 4, 3 stale: 8 epochs
              1: [0.4, 0.4, 0.4, 0.4, 0.4],                         # best at 0: 3 + 1 = 4 epochs
              2: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}      # never stale: round_epochs = 8
    real = graph_pl._accuracy

    def scripted(model, graph, split):
        m = t.method
        if model is m.student and split is t.data.val:
            return script[m.round][m.round_epoch]
        return real(model, graph, split)

    monkeypatch.setattr(graph_pl, "_accuracy", scripted)
    weights = {}
    t = make_trainer(tmp_path / "run", "cpl", epochs=40, patience=3, rounds=2, base_epochs=16, round_epochs=8,
                     callbacks=(lambda e, r: weights.__setitem__(e, t.method.student.state_dict()["conv1.bias"]
                                                                 .clone()),))
    t.fit()
    rounds = _rounds(tmp_path / "run")
    expected = [official_round_length(script[0], 3, 16), official_round_length(script[1], 3, 8),
                official_round_length(script[2], 3, 8)]
    assert [r["epochs"] for r in rounds] == expected == [8, 4, 8]
    assert [r["val_acc"] for r in rounds] == [0.7, 0.4, 0.8]
    assert t.method.done and _final(tmp_path / "run")["rounds_run"] == 2
    end = sum(expected) - 1  # the last trained epoch; the rest are idle
    assert all(torch.equal(weights[e], weights[end]) for e in range(end, 40))


@pytest.mark.parametrize("stop, checkpoint, kwargs", [
    (19, 19, {}),                                                   # inside round 1 (epochs 16..23)
    (21, 19, {"checkpoint_every": 4}),                              # replays epochs 20 and 21
    (34, 32, {"patience": 2, "rounds": 2, "checkpoint_every": 3}),  # after the last round: idle epochs
])
def test_stopped_run_resumes_bit_identical(tmp_path, stop, checkpoint, kwargs):
    full = make_trainer(tmp_path / "full", "cpl", **kwargs)
    full.fit()
    cut = make_trainer(tmp_path / "cut", "cpl", callbacks=(stop_after(stop),), **kwargs)
    with pytest.raises(Stop):
        cut.fit()
    resumed = make_trainer(tmp_path / "cut", "cpl", **kwargs)
    assert resumed.fit(resume=True).resumed_from == checkpoint
    if "rounds" in kwargs:
        assert full.method.done and _final(tmp_path / "full")["epoch"] < stop
    a, b = full.method.trainable().state_dict(), resumed.method.trainable().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = full.method.extra_state(), resumed.method.extra_state()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]) if isinstance(sa[key], torch.Tensor) else sa[key] == sb[key], key
    assert _final(tmp_path / "full") == {**_final(tmp_path / "cut"), "time": _final(tmp_path / "full")["time"]}


def test_unlabeled_candidates_exclude_val_and_test(tmp_path):
    t = make_trainer(tmp_path / "run", "pl", epochs=24, candidates="unlabeled", top_k=100)
    t.fit()
    # this graph puts every node in train, val or test: nothing may be pseudo-labeled
    assert len(t.method.pl_nodes) == 0


def test_graph_pl_refuses_minibatches_and_other_data(tmp_path):
    bundle = two_block_graph()
    student = models.build(ModelSpec(name="gcn"), bundle.spec)
    method = METHODS["pl"](student, None, METHODS["pl"].Params(), Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(optim=OptimSettings(name="adam", lr=0.01), train=LoopSettings(epochs=2, progress=False))
    with pytest.raises(ConfigError, match="data.batch_size must hold every training node"):
        Trainer(method, Batches(bundle, 4), recipe, tmp_path / "r")
    spec = DataSpec(name="v", input_shape=(12,), num_classes=3)
    tensors = Split(x=torch.randn(8, 12), y=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="needs graph data"):
        METHODS["cpl"](models.build(ModelSpec(name="mlp"), spec), None, METHODS["cpl"].Params(),
                       Setup.for_data(spec, tensors))


@pytest.mark.parametrize("name, params", [("pl", {"relabel_from": "base"}), ("cpl", {"aug_drop": 0.0})])
def test_relabel_from_base_takes_the_base_models_next_most_confident_nodes(tmp_path, name, params):
    """The official loop's behaviour (CPL's default): every round pseudo-labels from round 0's model, so after 3
    rounds of 10 the set is that model's 30 most confident non-training nodes, whatever later rounds learned
    (CPL: views without noise, all equal to the clean one)."""
    t = make_trainer(tmp_path / "run", name, **params)
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
