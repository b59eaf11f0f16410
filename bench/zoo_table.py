"""The method zoo side by side on one data set: each method from its own example config (same data, teacher,
student and schedule; only `method` differs), over several seeds, in one table.

    python bench/zoo_table.py [--data fashion_mnist] [--seeds 3] [--methods ce,kd,...] [key=value ...]

Runs go to runs/zoo_<data>/<method>/seed<k> (continued with --resume); the table and a plot to
runs/zoo_<data>/ and, with --write, into docs/results.md between `<!-- zoo:<data> -->` markers.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from kdforge.compare import compare
from kdforge.config import ExperimentConfig, load_config
from kdforge.fileio import atomic_write_text
from kdforge.report import markdown_table, plot_comparison

from _report import write_section  # bench/_report.py

CONFIGS = Path(__file__).parents[1] / "configs"
ZOO = ["ce", "kd", "wsl", "dkd", "fitnet", "at", "sp", "nst", "pkt", "rkd", "vid", "reviewkd", "crd"]  # CRD: slowest


def example_config(data: str, method: str, overrides: list[str] = ()) -> ExperimentConfig:
    """`configs/<data>_<method>.yaml`; ce and kd live in the KD config (ce without KD's params)."""
    own = CONFIGS / f"{data}_{method}.yaml"
    extra = ["method.params={}"] if method == "ce" else []
    return load_config(own if own.exists() else CONFIGS / f"{data}_kd.yaml", [f"method.name={method}", *extra, *overrides])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default=",".join(ZOO))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args, overrides = ap.parse_known_args()
    out = Path("runs") / f"zoo_{args.data}"
    t0 = time.time()
    rows, teacher_row = [], None
    for method in args.methods.split(","):
        cfg = example_config(args.data, method, overrides)
        result = compare(cfg, [method], args.seeds, out / method, resume=args.resume)
        teacher_row = teacher_row or next((r for r in result.rows if r["method"].startswith("teacher")), None)
        rows += [r for r in result.rows if not r["method"].startswith("teacher")]
        print(result.table, flush=True)
    rows = ([teacher_row] if teacher_row else []) + rows
    table = markdown_table(rows)
    atomic_write_text(out / "table.md", table)
    plot_comparison(rows, out / "comparison.png", f"method zoo on {args.data}")
    print(table)
    if args.write:
        body = (f"`python bench/zoo_table.py --data {args.data} --seeds {args.seeds} {' '.join(overrides)}` "
                f"({(time.time() - t0) / 60:.0f} min on {time.strftime('%Y-%m-%d')}); every method from "
                f"`configs/{args.data}_<method>.yaml`, test metrics mean ± std over seeds 0..{args.seeds - 1}.\n\n"
                + table)
        write_section(Path("docs/results.md"), args.data, body, tag="zoo")

if __name__ == "__main__":
    main()
