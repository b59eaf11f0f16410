"""Graph models on torch_geometric layers, for `graph` data: called as model(node_features, edge_index)."""
from __future__ import annotations

from pydantic import PositiveInt
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.models.mlp import Dropout
from kdforge.registry import MODELS


def graph_features(spec: DataSpec) -> int:
    if spec.kind != "graph":
        raise ValueError(f"needs graph data (node features and edges), got {spec.kind!r} data")
    return spec.input_shape[0]


class GCN(nn.Module):
    """Kipf & Welling, ICLR 2017: dropout, GCNConv, ReLU, dropout, GCNConv (their two-layer Planetoid model)."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv  # imported here: torch_geometric is slow to import

        self.dropout = nn.Dropout(dropout)
        self.conv1 = GCNConv(in_features, hidden)
        self.conv2 = GCNConv(hidden, classes)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = self.conv1(self.dropout(x), edge_index).relu()
        return self.conv2(self.dropout(x), edge_index)


@MODELS.register("gcn")
def gcn(spec: DataSpec, hidden: PositiveInt = 64, dropout: Dropout = 0.5) -> nn.Module:
    return GCN(graph_features(spec), hidden, spec.num_classes, dropout)
