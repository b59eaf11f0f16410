"""Graph models: the GCN's fast path (cached normalized adjacency, sparse features) computes exactly what
torch_geometric's own GCNConv computes, gradients included, and notices new inputs; SAGE and GAT run."""
import copy

import pytest
import torch
import torch.nn.functional as F

from kdforge import models
from kdforge.data.types import DataSpec
from kdforge.models import ModelSpec
from kdforge.models.gnn import SparseFeatures

SPEC = DataSpec(name="g", input_shape=(300,), num_classes=4, kind="graph", num_nodes=400)


def _graph(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(400, 300, generator=gen) < 0.02).float()  # bag-of-words-like: ~2 % non-zero
    x = x / x.sum(1, keepdim=True).clamp_min(1)
    adj = torch.rand(400, 400, generator=gen) < 0.01
    adj = (adj | adj.T) & ~torch.eye(400, dtype=torch.bool)
    return x, adj.nonzero().T.contiguous()


def _reference(gcn):
    """torch_geometric's GCN from its own layers (normalizing on every call), with the same weights."""
    from torch_geometric.nn import GCNConv

    c1, c2 = GCNConv(300, 16), GCNConv(16, 4)
    c1.load_state_dict(gcn.conv1.state_dict())
    c2.load_state_dict(gcn.conv2.state_dict())
    return lambda x, e: c2(c1(x, e).relu(), e), (c1, c2)


def test_gcn_equals_torch_geometric_gcnconv_with_gradients():
    torch.manual_seed(0)
    gcn = models.build(ModelSpec(name="gcn", params={"hidden": 16}), SPEC).eval()
    ref, (c1, c2) = _reference(gcn)
    x, edges = _graph()
    ours, theirs = gcn(x, edges), ref(x, edges)
    assert torch.allclose(ours, theirs, atol=1e-6)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    assert torch.allclose(gcn.conv1.lin.weight.grad, c1.lin.weight.grad, atol=1e-6)
    assert torch.allclose(gcn.conv2.bias.grad, c2.bias.grad, atol=1e-6)


def test_gcn_caches_follow_new_edges_and_in_place_changes():
    torch.manual_seed(0)
    gcn = models.build(ModelSpec(name="gcn", params={"hidden": 16}), SPEC).eval()
    ref, _ = _reference(gcn)
    x, edges = _graph()
    gcn(x, edges)
    fewer = edges[:, ::2]  # a new edge set (an edge-dropped view)
    assert torch.allclose(gcn(x, fewer), ref(x, fewer), atol=1e-6)
    x.mul_(3.0)  # changed in place: the cached sparse copy must not be reused
    assert torch.allclose(gcn(x, edges), ref(x, edges), atol=1e-6)
    clone = copy.deepcopy(gcn)  # copies start without the caches and agree
    assert clone.inputs._source is None and torch.allclose(clone(x, edges), gcn(x, edges))


def test_sparse_dropout_keeps_zeros_and_scales_kept_entries():
    x, _ = _graph()
    drop = SparseFeatures(0.5).train()
    torch.manual_seed(0)
    out = drop(x).to_dense()
    assert out.shape == x.shape and torch.all(out[x == 0] == 0)
    kept = out != 0
    assert torch.allclose(out[kept], 2 * x[kept]) and 0.3 < kept.sum() / (x != 0).sum() < 0.7
    assert torch.equal(drop.eval()(x).to_dense(), x)
    dense = torch.randn(10, 4)  # mostly non-zero: the plain dense path
    assert not drop(dense).is_sparse_csr and torch.equal(drop(dense), dense)


@pytest.mark.parametrize("name", ["sage", "gat", "gcn", "mlp"])
def test_graph_models_give_logits_per_node(name):
    x, edges = _graph()
    model = models.build(ModelSpec(name=name), SPEC).train()
    out = model(x, edges)
    assert out.shape == (400, 4) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.zeros(400, dtype=torch.long)).backward()


def test_sparse_path_is_taken_for_many_sparse_rows_only():
    x, _ = _graph()
    feats = SparseFeatures(0.0).eval()
    assert feats(x).is_sparse_csr
    assert not feats(x[:5]).is_sparse_csr  # a few queried nodes: dense
