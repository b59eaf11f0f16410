"""Graph models on torch_geometric layers, for `graph` data: called as model(node_features, edge_index).

Registered: `gcn` (Kipf & Welling), `sage` (GraphSAGE, Hamilton et al.), `gat` (Velickovic et al.); the `mlp` on
node features (`models/mlp.py`) is the graph-free student of GLNN.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.errors import require_extra
from kdforge.models.mlp import Dropout
from kdforge.registry import MODELS

# Above this share of non-zeros a dense first layer is as fast as a sparse one; below this many rows (a few
# queried nodes) building the sparse copy costs more than it saves.
SPARSE_DENSITY = 0.1
SPARSE_MIN_ROWS = 256


def graph_features(spec: DataSpec) -> int:
    if spec.kind != "graph":
        raise ValueError(f"needs graph data (node features and edges), got {spec.kind!r} data")
    return spec.input_shape[0]


class _SparseMatmul(torch.autograd.Function):
    """`sparse @ dense` whose backward multiplies by a cached transpose of the sparse matrix.

    Why: autograd's own backward of a CSR product converts the transposed matrix to CSR again on every step; for
    the fixed adjacency and features of a full-graph GCN that was ~25 % of a Cora training step (hidden 128)."""

    @staticmethod
    def forward(ctx: Any, sparse: Tensor, sparse_t: Tensor, dense: Tensor) -> Tensor:  # type: ignore[override]
        ctx.sparse_t = sparse_t
        return sparse @ dense

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:  # type: ignore[override]
        return None, None, ctx.sparse_t @ grad


def _transpose_csr(matrix: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return matrix.to_sparse_coo().t().coalesce().to_sparse_csr()


def sparse_matmul(sparse: Tensor, transposed: Callable[[], Tensor | None], dense: Tensor) -> Tensor:
    """`sparse @ dense`; when `dense` needs a gradient and `transposed()` gives the cached transpose of `sparse`,
    the backward uses it (`_SparseMatmul`)."""
    sparse_t = transposed() if dense.requires_grad and torch.is_grad_enabled() else None
    return sparse @ dense if sparse_t is None else _SparseMatmul.apply(sparse, sparse_t, dense)


class SparseFeatures(nn.Module):
    """Dropout on node features, handed on as a sparse CSR matrix when they are mostly zeros.

    Why: Planetoid's bag-of-words features are 1.3 % (Cora) non-zero, and a dense dropout mask plus a dense
    first-layer matmul were 85 of the 94 ms of a GCN step on Cora. F.linear takes the CSR matrix (with the weight's
    gradient), and dropout on the stored non-zeros alone has the same distribution as on the dense matrix, since
    dropping a zero changes nothing. The CSR structure is built once per input tensor: the tensor is kept (so its
    identity cannot be reused by another) and its version counter detects in-place changes. Inputs that need a
    gradient, that are dense, or that hold a few rows take the plain dense path.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self._source: Tensor | None = None
        self._version = -1
        self._csr: Tensor | None = None
        self._csr_t: Tensor | None = None
        self._plain = False  # the last output is the cached matrix itself (no dropout on it)

    def forward(self, x: Tensor) -> Tensor:
        out = self._forward(x)
        self._plain = out is self._csr
        return out

    def transposed(self) -> Tensor | None:
        """The transpose of the last output, cached, when that output is the cached CSR matrix; else None."""
        if not self._plain or self._csr is None:
            return None
        if self._csr_t is None:
            self._csr_t = _transpose_csr(self._csr)
        return self._csr_t

    def _forward(self, x: Tensor) -> Tensor:
        if x.requires_grad or x.dim() != 2 or x.shape[0] < SPARSE_MIN_ROWS:
            return F.dropout(x, self.p, self.training)
        if x is not self._source or x._version != self._version:
            dense_enough = int(torch.count_nonzero(x)) > SPARSE_DENSITY * x.numel()
            self._source, self._version = x, x._version
            with warnings.catch_warnings():  # "sparse CSR support is in beta": F.linear on CSR is what we use
                warnings.simplefilter("ignore", UserWarning)
                self._csr = None if dense_enough else x.detach().to_sparse_csr()
            self._csr_t = None
        if self._csr is None:
            return F.dropout(x, self.p, self.training)
        csr = self._csr
        if not self.training or self.p == 0:
            return csr
        values = F.dropout(csr.values(), self.p, True)
        return torch.sparse_csr_tensor(csr.crow_indices(), csr.col_indices(), values, csr.shape,
                                       check_invariants=False)  # the structure is the checked one above

    def __deepcopy__(self, memo: dict[int, Any]) -> "SparseFeatures":
        return SparseFeatures(self.p).train(self.training)  # the cache is rebuilt on first use, not copied


GCNNorm = Literal["pyg", "cpl"]


class NormalizedAdjacency(nn.Module):
    """GCN's D^-1/2 (A + I) D^-1/2 as a sparse CSR matrix, built once per edge_index tensor.

    Why: GCNConv recomputes this normalization and scatters messages on every call; multiplying by one cached
    sparse matrix made a Cora forward 2.7x faster (12.7 -> 4.7 ms). Same identity/version check as
    `SparseFeatures`, so a new edge set (an edge-dropped view) gets its own matrix.

    `norm="pyg"` is torch_geometric's `gcn_norm` (self-loop weight 1, D the in-degree). `norm="cpl"` is the
    adjacency of CPL's official GCN (AcEbt/CPL@326fe67 data.py:58 `dgl.add_self_loop`, then data.py:68-72 and
    119-136 `preprocess_adj` adds the identity again and `normalize_adj` returns D^-1/2 A^T D^-1/2 with D the row
    sums): self-loop weight 2 and D the out-degree, i.e. out_i = sum over edges j->i of h_j / sqrt(d_i d_j). On an
    undirected graph the degrees agree; they differ on CPL's edge-dropped views. An explicit self-loop (i, i) in
    edge_index keeps weight 1 (torch_geometric's `add_remaining_self_loops` keeps present loops): that is how a
    view whose edge drop removed node i's DGL self-loop is written (`kdforge.losses.cpl_view_inputs`)."""

    def __init__(self, norm: GCNNorm = "pyg") -> None:
        super().__init__()
        self.norm = norm
        self._source: Tensor | None = None
        self._version = -1
        self._adj: Tensor | None = None
        self._adj_t: Tensor | None = None

    def forward(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        if edge_index is not self._source or edge_index._version != self._version or self._adj is None \
                or self._adj.shape[0] != num_nodes:
            gcn_norm = require_extra("torch_geometric.nn.conv.gcn_conv", "graph", "graph models").gcn_norm

            if self.norm == "cpl":  # explicit weights: gcn_norm ignores `improved` when edge_weight is None
                ones = torch.ones(edge_index.shape[1], device=edge_index.device)
                edges, weight = gcn_norm(edge_index, ones, num_nodes, improved=True, add_self_loops=True,
                                         flow="target_to_source")  # degrees over sources: A's row sums
            else:
                edges, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
            # rows are targets: GCNConv reads a sparse matrix as the transposed adjacency (adj_t)
            adj = torch.sparse_coo_tensor(edges.flip(0), weight, (num_nodes, num_nodes),
                                          check_invariants=False).coalesce()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._adj = adj.to_sparse_csr()
            self._adj_t = None
            self._source, self._version = edge_index, edge_index._version
        return self._adj

    def transposed(self) -> Tensor | None:
        """The transpose of the current matrix, built once (backward of a step; views need none)."""
        if self._adj is not None and self._adj_t is None:
            self._adj_t = _transpose_csr(self._adj)
        return self._adj_t

    def __deepcopy__(self, memo: dict[int, Any]) -> "NormalizedAdjacency":
        return NormalizedAdjacency(self.norm).train(self.training)


class GCN(nn.Module):
    """Kipf & Welling, ICLR 2017: [dropout], GCNConv, ReLU, dropout, GCNConv (their two-layer Planetoid model).

    The GCN of CPL's official code (AcEbt/CPL@326fe67 models.py:12-59, utils.py:21-25) is `input_dropout=False`
    (dropout only between the two layers), `norm="cpl"` (its adjacency, see `NormalizedAdjacency`) and
    `init="pygcn"` (its `GraphConvolution.reset_parameters`, from Kipf's pygcn: weight and bias uniform in
    +-1/sqrt(out_features); torch_geometric: glorot weight, zero bias)."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float, input_dropout: bool = True,
                 norm: GCNNorm = "pyg", init: Literal["glorot", "pygcn"] = "glorot") -> None:
        super().__init__()
        # imported here: torch_geometric is slow to import
        GCNConv = require_extra("torch_geometric.nn", "graph", "graph models").GCNConv

        self.inputs = SparseFeatures(dropout if input_dropout else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.adjacency = NormalizedAdjacency(norm)
        self.conv1 = GCNConv(in_features, hidden, normalize=False)  # normalized once by `adjacency`
        self.conv2 = GCNConv(hidden, classes, normalize=False)
        if init == "pygcn":
            for conv in (self.conv1, self.conv2):
                bound = 1.0 / math.sqrt(conv.out_channels)
                nn.init.uniform_(conv.lin.weight, -bound, bound)
                nn.init.uniform_(conv.bias, -bound, bound)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """GCNConv's computation (lin, propagate over the normalized adjacency, bias), its sparse products written
        out to reuse cached transposes in the backward (`sparse_matmul`); the tests check it against GCNConv."""
        adj = self.adjacency(edge_index, x.shape[0])
        h = self.inputs(x)
        w1 = self.conv1.lin.weight
        h = sparse_matmul(h, self.inputs.transposed, w1.t()) if h.is_sparse_csr else self.conv1.lin(h)
        h = (sparse_matmul(adj, self.adjacency.transposed, h) + self.conv1.bias).relu()
        h = self.conv2.lin(self.dropout(h))
        return sparse_matmul(adj, self.adjacency.transposed, h) + self.conv2.bias


class SAGE(nn.Module):
    """Hamilton et al., NeurIPS 2017, GraphSAGE full-batch: dropout, SAGEConv (mean), ReLU, dropout, SAGEConv."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float, aggr: str) -> None:
        super().__init__()
        SAGEConv = require_extra("torch_geometric.nn", "graph", "graph models").SAGEConv

        self.dropout = nn.Dropout(dropout)
        self.conv1 = SAGEConv(in_features, hidden, aggr=aggr)
        self.conv2 = SAGEConv(hidden, classes, aggr=aggr)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = self.conv1(self.dropout(x), edge_index).relu()
        return self.conv2(self.dropout(x), edge_index)


class GAT(nn.Module):
    """Velickovic et al., ICLR 2018, their Planetoid model: dropout, GATConv (`heads` heads of `hidden` units,
    concatenated), ELU, dropout, GATConv (one head to the classes); attention coefficients dropped with
    `dropout` too."""

    def __init__(self, in_features: int, hidden: int, classes: int, heads: int, dropout: float) -> None:
        super().__init__()
        GATConv = require_extra("torch_geometric.nn", "graph", "graph models").GATConv

        self.dropout = nn.Dropout(dropout)
        self.conv1 = GATConv(in_features, hidden, heads=heads, dropout=dropout)
        self.conv2 = GATConv(hidden * heads, classes, heads=1, concat=False, dropout=dropout)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.elu(self.conv1(self.dropout(x), edge_index))
        return self.conv2(self.dropout(x), edge_index)


@MODELS.register("gcn")
def gcn(spec: DataSpec, hidden: PositiveInt = 64, dropout: Dropout = 0.5, input_dropout: bool = True,
        norm: GCNNorm = "pyg", init: Literal["glorot", "pygcn"] = "glorot") -> nn.Module:
    return GCN(graph_features(spec), hidden, spec.num_classes, dropout, input_dropout, norm, init)


@MODELS.register("sage")
def sage(spec: DataSpec, hidden: PositiveInt = 64, dropout: Dropout = 0.5, aggr: str = "mean") -> nn.Module:
    if aggr not in ("mean", "max", "sum"):
        raise ValueError(f"aggr={aggr!r}: choose mean, max or sum")
    return SAGE(graph_features(spec), hidden, spec.num_classes, dropout, aggr)


@MODELS.register("gat")
def gat(spec: DataSpec, hidden: PositiveInt = 8, heads: PositiveInt = 8, dropout: Dropout = 0.6) -> nn.Module:
    return GAT(graph_features(spec), hidden, spec.num_classes, heads, dropout)
