"""Pseudo-labeling on graphs: the cautious PL loss, the selection rule, multi-view agreement and the error
analysis of Wang et al., "Deep Insights into Noisy Pseudo Labeling on Graph Data" (CPL, NeurIPS 2023), following
their code AcEbt/CPL@326fe67 (`utils.py`: `weighted_cross_entropy`, `multiview_pred`; `main_node.py`: the
selection in the pseudo-labeling loop). Pure functions of tensors.

Node rows only: logits [N, C] with classes on dim 1, one row per graph node. Nodes are samples, not positions of a
sequence, so losses.common's layout rule (`dim`, `mask`, `reduction`) does not apply: select nodes by indexing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cautious_pl_loss(logits: Tensor, labels: Tensor, weights: Tensor | None = None, beta: float = 1 / 3) -> Tensor:
    """CPL's weighted CE (official `weighted_cross_entropy` with `sign=False` after a softmax, T = identity):
    sum_i w_i / (mean(w) * beta) * (-log p_i,y_i) / n over labeled and pseudo-labeled nodes alike.

    With the default weights (all ones, as every CPL run uses: `bald = ones`) this is (1/beta) * mean CE, i.e. 3x
    the CE at beta = 1/3; with Adam the factor mostly weakens the L2 weight decay relative to the data term.
    Deviation: log_softmax instead of log(softmax) (same value, finite for saturated logits), and the official
    code's in-place `bald += 1e-6` (which shifts the weights of later calls) is done on a copy.
    """
    if logits.dim() != 2:
        raise ValueError(f"cautious_pl_loss: needs node logits [N, C], got shape {tuple(logits.shape)}")
    nll = F.cross_entropy(logits, labels, reduction="none")
    if weights is None:
        return nll.mean() / beta
    w = weights + 1e-6
    return (nll * w / (w.mean() * beta)).sum() / labels.shape[0]


def select_pseudo_labels(confidence: Tensor, eligible: Tensor, top_k: int | None, threshold: float) -> Tensor:
    """Node ids to pseudo-label this round (CPL `main_node.py`): confidence is zeroed where not eligible, the
    candidates are those above `threshold`, and when there are at least `top_k` of them the `top_k` most confident
    are taken (`top_k=None`: every candidate, the thresholded PL). Returned in order of decreasing confidence."""
    conf = torch.where(eligible, confidence, torch.zeros_like(confidence))
    candidates = (conf > threshold).nonzero().view(-1)
    if top_k is not None and len(candidates) >= top_k:
        return torch.topk(conf, top_k).indices
    return candidates[conf[candidates].argsort(descending=True, stable=True)]


def average_views(view_logits: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(confidence, label) of the mean of the views' logits (official `multiview_pred`: logits summed, / 4,
    then softmax). The first view is the clean one."""
    mean = torch.stack(view_logits).mean(0)
    return F.softmax(mean, dim=1).max(dim=1)


def cpl_view_inputs(x: Tensor, edge_index: Tensor, drop: float,
                    gen: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """The (features, edge_index) inputs of the 4 views of official `multiview_pred` (utils.py:110-164): clean;
    features dropped at rate `drop` (`F.dropout`, training mode: kept ones scaled by 1/(1-drop)); edges dropped;
    noise U(0,1) * std(X) * drop / 2 added to every feature.

    Edge drop: the official graph carries a self-loop on every node (data.py:58 `dgl.add_self_loop`), and
    int(drop * (|E| + N)) of its |E| + N directed edges are removed uniformly (utils.py:136-140). Removed edges
    leave edge_index; a node whose self-loop was removed gets an explicit (i, i) edge, which the GCN's
    `norm="cpl"` adjacency reads as self weight 1 instead of 2 (with `norm="pyg"` it changes nothing)."""
    n, e = x.shape[0], edge_index.shape[1]
    keep = torch.rand(e + n, generator=gen).argsort()[int((e + n) * drop):].sort().values
    kept_edges = edge_index[:, keep[keep < e]]
    lost_loop = torch.ones(n, dtype=torch.bool)
    lost_loop[keep[keep >= e] - e] = False
    loops = lost_loop.nonzero().view(1, -1).expand(2, -1).to(edge_index.device)
    dropped = x * (torch.rand(x.shape, generator=gen) >= drop).to(x.device) / (1 - drop)
    noisy = x + torch.rand(x.shape, generator=gen).to(x.device) * x.std() * drop / 2
    return [(x, edge_index), (dropped, edge_index), (x, torch.cat([kept_edges, loops], 1)), (noisy, edge_index)]


def view_agreement(view_logits: list[Tensor]) -> Tensor:
    """Per node, whether every augmented view predicts the clean view's class (official `consist`) [N] bool."""
    clean = view_logits[0].argmax(1)
    agree = torch.ones_like(clean, dtype=torch.bool)
    for view in view_logits[1:]:
        agree &= view.argmax(1) == clean
    return agree


def wrong_with_wrong_neighbour(nodes: Tensor, wrong: Tensor, edge_index: Tensor, num_nodes: int) -> int:
    """How many of the wrongly pseudo-labeled `nodes` (`wrong[i]` for `nodes[i]`) have a 1-hop neighbour that is
    also wrongly pseudo-labeled: the clustering of PL errors that CPL's analysis is about (errors next to errors
    reinforce each other through message passing)."""
    bad = torch.zeros(num_nodes, dtype=torch.bool, device=nodes.device)
    bad[nodes[wrong]] = True
    src, dst = edge_index
    both = bad[src] & bad[dst] & (src != dst)
    return int(torch.unique(src[both]).numel())
