"""Fully connected pieces shared by the zoo (the dropout type, `mlp_head`) and `mlp`, a plain MLP on flattened input."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field, PositiveInt
from torch import Tensor, nn

from kdforge.data.types import DataSpec
from kdforge.registry import MODELS

#: A dropout probability, as `kdforge.models.build` validates it.
Dropout = Annotated[float, Field(ge=0, lt=1)]


def mlp_head(in_features: int, hidden: Sequence[int], num_classes: int, dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout for each hidden width, then a Linear to the classes (default PyTorch init)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


class MLP(nn.Sequential):
    """A Sequential that ignores inputs after the first: on graph data it is called with (node features,
    edge_index) and uses the features alone (an MLP student needs no graph at inference, as in GLNN)."""

    def forward(self, x: Tensor, *ignored: Tensor) -> Tensor:
        return super().forward(x)


@MODELS.register("mlp")
def mlp(spec: DataSpec, hidden: Sequence[PositiveInt] = (256, 256), dropout: Dropout = 0.0) -> nn.Module:
    """An MLP on the flattened input, for any float input shape (e.g. MNIST-1D's (40,), a graph's node features)."""
    if spec.kind == "tokens":
        raise ValueError("an MLP takes float features, not token ids; use bow or textcnn")
    if spec.kind == "graph":  # node features, often mostly zeros: the GCN's sparse first layer, no flattening
        from kdforge.models.gnn import SparseFeatures

        return MLP(SparseFeatures(0.0), *mlp_head(spec.input_shape[0], hidden, spec.num_classes, dropout))
    return MLP(nn.Flatten(), *mlp_head(math.prod(spec.input_shape), hidden, spec.num_classes, dropout))
