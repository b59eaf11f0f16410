"""GLNN: the soft term covers every node of the graph (or the labeled batch), with KD or WSL as kdforge computes
them, and the CE only the labeled nodes."""
import sys
from pathlib import Path

import pytest
import torch

from kdforge import models
from kdforge.errors import ConfigError
from kdforge.losses import hard_cross_entropy, kd_loss, wsl_loss
from kdforge.methods import METHODS, Setup
from kdforge.models import ModelSpec
from kdforge.teachers.live import LiveTeacher

sys.path.insert(0, str(Path(__file__).parent))
from test_graph_pl import two_block_graph  # noqa: E402


def _glnn(**params):
    bundle = two_block_graph()
    torch.manual_seed(0)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [8]}), bundle.spec)
    teacher = models.build(ModelSpec(name="gcn", params={"hidden": 8}), bundle.spec).eval()
    cls = METHODS["glnn"]
    method = cls(student, LiveTeacher(teacher), cls.Params(**params), Setup.for_data(bundle.spec, bundle.train))
    batch = bundle.train.batch(torch.arange(len(bundle.train)))
    g = bundle.train.graph
    with torch.no_grad():
        s_all, t_all = student(g.x, g.edge_index), teacher(g.x, g.edge_index)
    return method, batch, s_all, t_all, bundle


def test_glnn_kd_on_every_node():
    method, batch, s_all, t_all, bundle = _glnn(ce_weight=0.3, kd_weight=0.7, temperature=2.0)
    logits, terms = method.loss_terms(batch, None)
    nodes = bundle.train.x
    assert torch.allclose(logits, s_all[nodes])
    assert torch.allclose(terms["ce"], 0.3 * hard_cross_entropy(s_all[nodes], bundle.train.y))
    assert torch.allclose(terms["kd"], 0.7 * kd_loss(s_all, t_all, 2.0))
    # the labeled batch alone is a different (plain KD) term
    _, train_only = _glnn(nodes="train")[0].loss_terms(batch, None)
    assert torch.allclose(train_only["kd"], kd_loss(s_all[nodes], t_all[nodes], 1.0))
    assert not torch.allclose(train_only["kd"], kd_loss(s_all, t_all, 1.0))


def test_glnn_wsl_uses_true_labels_where_known_and_teacher_labels_elsewhere():
    method, batch, s_all, t_all, bundle = _glnn(loss="wsl", temperature=2.0)
    _, terms = method.loss_terms(batch, None)
    labels = t_all.argmax(1)
    labels[bundle.train.x] = bundle.train.y
    assert torch.allclose(terms["wsl"], wsl_loss(s_all, t_all, labels, 2.0))


def test_glnn_needs_graph_data():
    from kdforge.data.types import DataSpec, Split

    spec = DataSpec(name="v", input_shape=(4,), num_classes=2)
    split = Split(x=torch.randn(8, 4), y=torch.zeros(8, dtype=torch.long))
    net = models.build(ModelSpec(name="mlp"), spec)
    with pytest.raises(ConfigError, match=r"method glnn \(a GNN distilled into an MLP\) needs graph data, got "
                                          r".tensor. data; use kd"):
        METHODS["glnn"](net, LiveTeacher(models.build(ModelSpec(name="mlp"), spec)), METHODS["glnn"].Params(),
                        Setup.for_data(spec, split))
