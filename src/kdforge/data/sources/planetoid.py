"""Planetoid citation graphs (Cora, CiteSeer; PubMed when its files are present) from the raw `ind.*` files.

The files are pickles, so each one is checked against a pinned sha256 and read with a restricted Unpickler (numpy
arrays, scipy CSR matrices, a defaultdict of lists). The graph is assembled exactly as torch_geometric's
`read_planetoid_data` does (test-index reordering, CiteSeer's isolated test nodes as zero rows, self-loops removed,
edges coalesced), which the tests check against it. Splits: the public Planetoid one (20 labels per class, 500
validation and 1,000 test nodes) or a random one with `num_per_class` labels per class.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from kdforge.data.checksums import read_verified
from kdforge.data.safe_pickle import NUMPY, load_restricted
from kdforge.data.sources.base import SourceParams, register, require
from kdforge.data.types import DataBundle, DataSpec, Graph, Split
from kdforge.errors import DataError, require_extra

PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
# ../shared/data/SHA256SUMS (kimiyoung/planetoid @af6abf4 data/)
PINNED = {
    "cora": {
        "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
        "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
        "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
        "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
        "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
        "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
        "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
        "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    },
    "citeseer": {
        "x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
        "y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
        "tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
        "ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
        "allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
        "ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
        "graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
        "test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    },
}


class PlanetoidParams(SourceParams):
    split: Literal["public", "random"] = Field("public", description="Planetoid's public split, or a random one")
    num_per_class: int = Field(20, gt=0, description="random split: labeled training nodes per class")
    num_val: int = Field(500, gt=0, description="random split: validation nodes")
    num_test: int = Field(1000, gt=0, description="random split: test nodes")
    seed: int = Field(0, description="random split: its seed")
    normalize_features: bool = Field(True, description="divide each node's features by their sum (GCN's recipe)")


def _allowed() -> dict[tuple[str, str], object]:
    # imported here: only Planetoid needs scipy's sparse matrices
    csr = require_extra("scipy.sparse", "graph", "Planetoid data").csr_matrix
    return {**NUMPY, ("scipy.sparse.csr", "csr_matrix"): csr, ("scipy.sparse._csr", "csr_matrix"): csr,
            ("collections", "defaultdict"): defaultdict, ("__builtin__", "list"): list, ("builtins", "list"): list}


def read_raw(folder: Path, prefix: str) -> dict[str, object]:
    """Each verified part of `ind.<prefix>.*`: dense float tensors for features and one-hot labels, the adjacency
    dict for `graph`, int64 indices for `test.index`."""
    pinned = PINNED.get(prefix) or _listed_sums(folder, prefix)
    allowed, parts = _allowed(), {}
    for part in PARTS:
        path = require(folder / f"ind.{prefix}.{part}")
        data = read_verified(path, pinned[part])
        if part == "test.index":
            parts[part] = torch.tensor([int(v) for v in data.split()], dtype=torch.long)
            continue
        obj = load_restricted(data, path, allowed, encoding="latin1")
        if part != "graph":
            dense = obj.todense() if hasattr(obj, "todense") else obj
            obj = torch.from_numpy(np.asarray(dense)).to(torch.float)
        parts[part] = obj
    return parts


def _listed_sums(folder: Path, prefix: str) -> dict[str, str]:
    """sha256 of `ind.<prefix>.*` from the data folder's SHA256SUMS (`<hash>  ./planetoid/raw/ind.<prefix>.x`): how
    a data set outside the pinned snapshot (PubMed, whose files are too large for it) is verified before unpickling."""
    sums_file = folder.parents[1] / "SHA256SUMS"
    listed = {}
    if sums_file.exists():
        for line in sums_file.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name.startswith(f"./planetoid/raw/ind.{prefix}."):
                listed[name[len(f"./planetoid/raw/ind.{prefix}."):]] = digest.strip()
    missing = [p for p in PARTS if p not in listed or not (folder / f"ind.{prefix}.{p}").exists()]
    if missing:
        raise DataError(f"{folder}: the raw files of {prefix!r} are not in the data snapshot (PubMed's are too large "
                        f"for it); copy ind.{prefix}.{{{','.join(PARTS)}}} (kimiyoung/planetoid data/) there and "
                        f"list their sha256 in {sums_file} as '<sha256>  ./planetoid/raw/ind.{prefix}.<part>'")
    return listed


def assemble(parts: dict[str, object], prefix: str) -> tuple[Graph, Tensor, Tensor, Tensor]:
    """(graph, public train nodes, public val nodes, test nodes), as torch_geometric's read_planetoid_data."""
    x, y, tx, ty, allx, ally = (parts[k] for k in ("x", "y", "tx", "ty", "allx", "ally"))
    test_index: Tensor = parts["test.index"]  # type: ignore[assignment]
    sorted_test = test_index.sort()[0]
    if prefix == "citeseer":  # isolated test nodes: zero rows where the test indices skip
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext, ty_ext = torch.zeros(span, tx.shape[1]), torch.zeros(span, ty.shape[1])  # type: ignore[union-attr]
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext
    feats = torch.cat([allx, tx])  # type: ignore[list-item]
    feats[test_index] = feats[sorted_test]
    labels = torch.cat([ally, ty]).max(dim=1)[1]  # type: ignore[list-item]
    labels[test_index] = labels[sorted_test]
    n_train = y.shape[0]  # type: ignore[union-attr]
    edges = _edge_index(parts["graph"], labels.shape[0])  # type: ignore[arg-type]
    return (Graph(x=feats, edge_index=edges, y=labels), torch.arange(n_train), torch.arange(n_train, n_train + 500),
            test_index)


def _edge_index(adjacency: dict[int, list[int]], num_nodes: int) -> Tensor:
    """Every listed edge (the files list both directions), self-loops removed, duplicates dropped, ordered by
    target then source: PyG's `coalesce(..., sort_by_row=False)`."""
    row = torch.tensor([k for k, vs in adjacency.items() for _ in vs])
    col = torch.tensor([v for vs in adjacency.values() for v in vs])
    keep = row != col
    key = torch.unique(col[keep] * num_nodes + row[keep])  # sorted, unique
    return torch.stack([key % num_nodes, key // num_nodes])


def random_split(labels: Tensor, classes: int, params: PlanetoidParams) -> tuple[Tensor, Tensor, Tensor]:
    """`num_per_class` nodes of each class for training, then `num_val` and `num_test` of the rest, from `seed`
    (the scheme of torch_geometric's RandomNodeSplit(split="random"))."""
    gen = torch.Generator().manual_seed(params.seed)
    train = []
    for c in range(classes):
        nodes = (labels == c).nonzero().view(-1)
        if len(nodes) < params.num_per_class:
            raise DataError(f"class {c} has {len(nodes)} nodes, fewer than data.params.num_per_class="
                            f"{params.num_per_class}")
        train.append(nodes[torch.randperm(len(nodes), generator=gen)[: params.num_per_class]])
    train_idx = torch.cat(train)
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[train_idx] = False
    others = rest.nonzero().view(-1)
    others = others[torch.randperm(len(others), generator=gen)]
    if len(others) < params.num_val + params.num_test:
        raise DataError(f"only {len(others)} nodes remain for num_val + num_test = {params.num_val + params.num_test}")
    return train_idx.sort()[0], others[: params.num_val].sort()[0], \
        others[params.num_val : params.num_val + params.num_test].sort()[0]


def _load(prefix: str, root: Path | None, params: PlanetoidParams) -> DataBundle:
    assert root is not None, "Planetoid needs the data folder"
    graph, train, val, test = assemble(read_raw(root / "planetoid" / "raw", prefix), prefix)
    if params.normalize_features:
        graph.x = graph.x / graph.x.sum(-1, keepdim=True).clamp_min(1.0)
    classes = int(graph.y.max()) + 1
    if params.split == "random":
        train, val, test = random_split(graph.y, classes, params)
    spec = DataSpec(name=prefix, input_shape=(graph.x.shape[1],), num_classes=classes, kind="graph",
                    num_nodes=graph.num_nodes)
    part = lambda nodes: Split(x=nodes, y=graph.y[nodes], graph=graph)  # noqa: E731
    return DataBundle(spec=spec, train=part(train), val=part(val), test=part(test))


for _prefix in ("cora", "citeseer", "pubmed"):
    register(_prefix, params=PlanetoidParams)(lambda root, params, p=_prefix: _load(p, root, params))
