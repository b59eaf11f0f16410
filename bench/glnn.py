"""GLNN on Planetoid: accuracy of a GCN, an MLP alone and GLNN MLP students (KD and WSL soft terms) over seeds, and
inference time per node of the GCN teacher vs the MLP, side by side.

    python bench/glnn.py --data cora citeseer --seeds 10      # accuracy -> docs/results.md, timing -> docs/benchmarks.md
    python bench/glnn.py --data cora --timing-only

Accuracy runs come from `configs/cora_glnn.yaml` (CiteSeer: the same with data.name=citeseer); every student run
of a data set distills the same saved GCN teacher (its recipe's seed 0). Inference time per node is measured two
ways: the whole graph at once (forward time / nodes), and one node at a time as a service would answer a query:
the MLP reads that node's features only, the GCN needs the node's 2-hop neighbourhood gathered first
(`k_hop_subgraph`), which is what GLNN removes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from kdforge.api import build_data, build_model, load_config, prepare_teacher
from kdforge.compare import compare
from kdforge.config.schema import ExperimentConfig, MethodConfig, ModelConfig
from kdforge.report import markdown_table

from _report import command, machine, today, write_section  # bench/_report.py

ROOT = Path(__file__).resolve().parents[1]


def config(data: str, overrides: list[str]) -> ExperimentConfig:
    extra = [] if data == "cora" else [f"data.name={data}", "data.batch_size=120", f"name={data}_glnn"]
    return load_config(ROOT / "configs" / "cora_glnn.yaml", extra + overrides)


def accuracy(cfg: ExperimentConfig, seeds: int, out: Path) -> str:
    """GCN alone, MLP alone, GLNN-KD and GLNN-WSL MLPs (test accuracy, mean ± std over seeds)."""
    assert cfg.teacher is not None
    gcn_cfg = cfg.model_copy(update={"student": ModelConfig(name=cfg.teacher.model.name,
                                                            params=cfg.teacher.model.params),
                                     "teacher": None, "method": MethodConfig(name="ce"),
                                     "train": cfg.teacher.recipe.train, "optim": cfg.teacher.recipe.optim,
                                     "name": f"{cfg.name}_gcn"})
    rows = compare(gcn_cfg, ["ce"], seeds, out / "gcn", resume=True).rows
    rows[0]["method"] = "GCN alone (ce)"
    mlp_rows = compare(cfg, ["ce", "glnn"], seeds, out / "mlp", resume=True).rows
    wsl = cfg.model_copy(update={"method": MethodConfig(name="glnn", params={**cfg.method.params, "loss": "wsl"})})
    wsl_rows = compare(wsl, ["glnn"], seeds, out / "mlp_wsl", resume=True).rows
    labels = {"ce": "MLP alone (ce)", "glnn": "GLNN MLP (KD, all nodes)"}
    for row in mlp_rows:
        row["method"] = labels.get(row["method"], row["method"] + ", seed-0 recipe")
    wsl_rows[-1]["method"] = "GLNN MLP (WSL, all nodes)"
    return markdown_table(rows + mlp_rows + wsl_rows[-1:])


def _per_call(fn: Any, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def timing(cfg: ExperimentConfig, nodes: int = 200) -> dict[str, float]:
    """Seconds per node: whole-graph forward / N, and single-node queries (MLP: its row; GCN: its 2-hop
    subgraph gathered, then the forward on it)."""
    from torch_geometric.utils import k_hop_subgraph

    assert cfg.teacher is not None
    bundle = build_data(cfg.data)
    graph = bundle.train.graph
    assert graph is not None
    gcn = prepare_teacher(cfg, bundle).eval()
    mlp = build_model(cfg.student, bundle.spec).eval()
    x, edges, n = graph.x, graph.edge_index, graph.num_nodes
    queries = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:nodes].tolist()

    def gcn_queries() -> None:
        for v in queries:
            subset, sub_edges, mapping, _ = k_hop_subgraph(v, 2, edges, relabel_nodes=True, num_nodes=n)
            gcn(x[subset], sub_edges)[mapping]

    def mlp_queries() -> None:
        for v in queries:
            mlp(x[v : v + 1])

    with torch.no_grad():
        return {"gcn_full": _per_call(lambda: gcn(x, edges), 20) / n, "mlp_full": _per_call(lambda: mlp(x, edges), 20) / n,
                "gcn_query": _per_call(gcn_queries, 2) / nodes, "mlp_query": _per_call(mlp_queries, 2) / nodes}


def timing_table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| data | GCN, whole graph | MLP, whole graph | ratio | GCN, one node (2-hop subgraph) | MLP, one node | "
             "ratio |", "|---|---|---|---|---|---|---|"]
    for data, r in results.items():
        lines.append(f"| {data} | {r['gcn_full'] * 1e6:.2f} µs | {r['mlp_full'] * 1e6:.2f} µs | "
                     f"{r['gcn_full'] / r['mlp_full']:.1f}x | {r['gcn_query'] * 1e6:.0f} µs | "
                     f"{r['mlp_query'] * 1e6:.0f} µs | {r['gcn_query'] / r['mlp_query']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["cora", "citeseer"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "glnn")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfgs = {d: config(d, args.overrides) for d in args.data}
    times = {d: timing(cfg) for d, cfg in cfgs.items()}
    body = (f"## GLNN: inference time per node, GCN teacher vs MLP student\n\n"
            f"`{command()}` on {today()}; {machine()}. Inference time per node, GCN teacher (hidden 64) vs MLP "
            f"student (hidden [64]), eval mode, no_grad; one-node queries average 200 random nodes.\n\n"
            f"{timing_table(times)}")
    print(body)
    write_section(ROOT / "docs" / "benchmarks.md", "glnn_inference", body)
    if args.timing_only:
        return
    sections = []
    for data, cfg in cfgs.items():
        t0 = time.perf_counter()
        table = accuracy(cfg, args.seeds, args.out / data)
        sections.append(f"**{data}** ({time.perf_counter() - t0:.0f} s):\n\n{table}")
        print(sections[-1], flush=True)
    body = (f"`{command()}` on {today()}; test accuracy (%), mean ± std over seeds 0..{args.seeds - 1}; public "
            f"split.\n\n" + "\n\n".join(sections))
    write_section(ROOT / "docs" / "results.md", "glnn", body, tag="results")


if __name__ == "__main__":
    main()
