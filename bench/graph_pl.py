"""Pseudo-labeling on Planetoid with a GCN: no PL, plain PL, thresholded PL and cautious PL (CPL) over seeds, with
the per-round error analysis; writes a section of docs/results.md and a plot per data set under docs/img/.

    python bench/graph_pl.py --data cora --seeds 10             # runs (finished runs are kept), then the report
    python bench/graph_pl.py --data cora citeseer --report      # the report alone, from the runs on disk
    python bench/graph_pl.py --data cora citeseer --time 300    # ms per epoch of the official CPL configs

Every method runs from `configs/<data>_<suffix>.yaml` (`--suffix cpl`: its GCN, optimizer and rounds; `cpl_official`:
the official schedule) with the method swapped; `no PL` is round 0 of the plain-PL runs (the same GCN before any
pseudo-label). CPL labels every round from round 0's model (its default, the official loop). Overrides (key=value)
apply to every run.

`--time N` runs N epochs of round 0 of `configs/<data>_cpl_official.yaml` (a train step plus the method's
validation pass each), then N idle epochs (after the last round), on one thread, and prints the median wall time
and the mean process CPU time per epoch of each: what the official schedule's cost is made of.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from kdforge.api import load_config, run
from kdforge.config.schema import ExperimentConfig, MethodConfig
from kdforge.fileio import atomic_write_text
from kdforge.report import mean_std

from _report import command, today, write_section  # bench/_report.py

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("pl", "pl_threshold", "cpl")
LABELS = {"none": "no PL (round 0)", "pl": "plain PL (top-k)", "pl_threshold": "thresholded PL (conf > 0.9)",
          "cpl": "cautious PL (CPL)"}
ROUND_KEYS = ("base_epochs", "round_epochs", "patience", "rounds")


def method_config(cfg: ExperimentConfig, name: str) -> MethodConfig:
    """The config's CPL round lengths for every method; top-k from the config for plain PL, CPL's own params."""
    params = cfg.method.params
    if name == "cpl":
        return cfg.method
    chosen = {k: params[k] for k in ROUND_KEYS if k in params}
    if name == "pl":
        chosen["top_k"] = params.get("top_k", 100)
    return MethodConfig(name=name, params=chosen)


def run_all(datas: list[str], seeds: int, out: Path, overrides: list[str], suffix: str = "cpl") -> None:
    """Seed by seed over every data set and method, so that an interrupted sweep has equal seeds everywhere."""
    cfgs = {data: load_config(ROOT / "configs" / f"{data}_{suffix}.yaml", overrides) for data in datas}
    for seed in range(seeds):
        for (data, cfg), name in itertools.product(cfgs.items(), METHODS):
            run_dir = out / data / name / f"seed{seed}"
            if (run_dir / "summary.json").exists():
                continue
            t0 = time.perf_counter()
            run_cfg = cfg.model_copy(update={"method": method_config(cfg, name), "seed": seed,
                                             "output_dir": str(run_dir)})
            summary = run(run_cfg, resume=True)
            print(f"{data} {name} seed {seed}: test {summary['test']['top1']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


def rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The per-round records of one run (a round logged twice by a resumed run: its last record)."""
    by_round: dict[int, dict[str, Any]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == "method" and "round" in rec:
            by_round[rec["round"]] = rec
    return [by_round[r] for r in sorted(by_round)]


def collect(data: str, out: Path) -> dict[str, list[dict[str, Any]]]:
    """Per method, per finished seed: val-selected test accuracy, test-selected (max over PL rounds), round 0's
    test accuracy, and the round records."""
    found: dict[str, list[dict[str, Any]]] = {}
    done = [{p.parent.name for p in (out / data / name).glob("seed*/summary.json")} for name in METHODS]
    seeds = sorted(set.intersection(*done), key=lambda s: int(s[4:]))  # seeds every method finished
    for name in METHODS:
        for run_dir in (out / data / name / seed for seed in seeds):
            summary = json.loads((run_dir / "summary.json").read_text())
            recs = rounds(run_dir)
            later = [r["test_acc"] for r in recs[1:]] or [recs[0]["test_acc"]]
            found.setdefault(name, []).append({"seed": int(run_dir.name[4:]), "val_selected": summary["test"]["top1"],
                                               "test_selected": max(later), "round0": recs[0]["test_acc"],
                                               "rounds": recs})
    return found


def time_epochs(data: str, epochs: int, out: Path) -> None:
    """CPU ms per trained epoch (train step + the method's validation pass) and per idle epoch (after the last
    round) of the official config on one thread, from the process CPU time of three runs (after a warm-up run):
    1 epoch (start-up, final evaluation), `epochs` trained epochs, and `epochs` trained + 10 * `epochs` idle ones."""
    import torch

    torch.set_num_threads(1)
    cpu = {}
    idle = 10 * epochs
    runs = (("warm-up", 1, 1), ("start", 1, 1), ("trained", epochs, epochs), ("idle", epochs, epochs + idle))
    for label, trained, total in runs:
        cfg = load_config(ROOT / "configs" / f"{data}_cpl_official.yaml", [
            "method.params.rounds=0", f"method.params.base_epochs={trained}", "method.params.patience=null",
            f"train.epochs={total}", f"train.eval_every={total}", f"output_dir={out / 'timing' / data}"])
        t0 = time.process_time()
        run(cfg, overwrite=True)
        cpu[label] = time.process_time() - t0
    per_trained = (cpu["trained"] - cpu["start"]) / (epochs - 1)
    per_idle = (cpu["idle"] - cpu["trained"]) / idle
    print(f"{data}: {1e3 * per_trained:.1f} ms CPU per trained epoch, {1e3 * per_idle:.2f} ms per idle epoch, "
          f"{cpu['start']:.1f} s start-up and final evaluation ({epochs} epochs, 1 thread)", flush=True)


def pct(values: list[float]) -> str:
    m, s = mean_std([100 * v for v in values])
    return f"{m:.2f} ± {s:.2f}"


def table(found: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| method | seeds | test acc., val-selected | test acc., test-selected (official code's figure) | "
             "pseudo-labels (last round) | PL accuracy | wrong PL with a wrong 1-hop neighbour |",
             "|---|---|---|---|---|---|---|"]
    if "pl" in found:
        runs = found["pl"]
        lines.append(f"| {LABELS['none']} | {len(runs)} | {pct([r['round0'] for r in runs])} | – | 0 | – | – |")
    if "cpl" in found:  # CPL's round 0 differs: its loss is 3x the CE (beta = 1/3), i.e. weaker relative decay
        runs = found["cpl"]
        lines.append(f"| {LABELS['none']}, CPL's 3x CE loss | {len(runs)} | {pct([r['round0'] for r in runs])} | – "
                     "| 0 | – | – |")
    for name, runs in found.items():
        last = [r["rounds"][-2] for r in runs if len(r["rounds"]) > 1]  # the last round that added labels
        if not last:
            continue
        pl_total = mean_std([r["pl_total"] for r in last])[0]
        wrong = mean_std([r["wrong"] for r in last])[0]
        near = mean_std([r["wrong_next_to_wrong"] for r in last])[0]
        lines.append(f"| {LABELS[name]} | {len(runs)} | {pct([r['val_selected'] for r in runs])} | "
                     f"{pct([r['test_selected'] for r in runs])} | {pl_total:.0f} | "
                     f"{pct([r['pl_acc'] for r in last])} | {near:.1f} of {wrong:.1f} |")
    return "\n".join(lines)


def plot(found: dict[str, list[dict[str, Any]]], data: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdforge.plans.stats import t975

    def band(ax: Any, xs: list[int], per_seed: list[list[float]], label: str, color: str) -> None:
        """The mean over seeds and its 95 % t-interval shaded."""
        means, lo, hi = [], [], []
        for vals in per_seed:
            m, s = mean_std(vals)
            half = t975(len(vals) - 1) * s / len(vals) ** 0.5 if len(vals) > 1 else 0.0
            means.append(m)
            lo.append(m - half)
            hi.append(m + half)
        ax.plot(xs, means, marker="o", ms=4, color=color, label=label)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)

    fig, (ax_pl, ax_test) = plt.subplots(1, 2, figsize=(10, 4.1))
    seeds = sorted({len(runs) for runs in found.values()})
    for i, (name, runs) in enumerate(found.items()):
        n = min(len(r["rounds"]) for r in runs)
        xs = list(range(n))
        band(ax_test, xs, [[100 * r["rounds"][j]["test_acc"] for r in runs] for j in xs], LABELS[name], f"C{i}")
        pl_x = [j for j in xs if all("pl_acc" in r["rounds"][j] for r in runs)]
        band(ax_pl, [j + 1 for j in pl_x], [[100 * r["rounds"][j]["pl_acc"] for r in runs] for j in pl_x],
             LABELS[name], f"C{i}")
    ax_pl.set(xlabel="round trained with these pseudo-labels", ylabel="accuracy of all pseudo-labels (%)",
              title=f"{data}: pseudo-label accuracy")
    ax_test.set(xlabel="round (0 = no pseudo-labels)", ylabel="test accuracy of the round's model (%)",
                title=f"{data}: test accuracy (GCN)")
    for ax in (ax_pl, ax_test):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"line: mean over n = {'/'.join(map(str, seeds))} seeds; band: 95 % t-interval of the mean",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["cora", "citeseer"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "graph_pl")
    parser.add_argument("--report", action="store_true", help="only read the runs on disk and report")
    parser.add_argument("--suffix", default="cpl", help="configs/<data>_<suffix>.yaml (cpl, cpl_official)")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="only time N epochs of each data set")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.time:
        for data in args.data:
            time_epochs(data, args.time, args.out)
        return
    if not args.report:
        run_all(args.data, args.seeds, args.out, args.overrides, args.suffix)
    sections = []
    for data in args.data:
        found = collect(data, args.out)
        seeds = ", ".join(str(r["seed"]) for r in next(iter(found.values()), []))
        sections.append(f"**{data}** (GCN, public split; seeds {seeds}):\n\n{table(found)}\n\n"
                        f"![{data}](img/graph_pl_{data}.png)")
        print(sections[-1], flush=True)
        plot(found, data, ROOT / "docs" / "img" / f"graph_pl_{data}.png")
        atomic_write_text(args.out / data / "collected.json", json.dumps(found, indent=1))
    body = (f"`{command()}` (report written {today()}; runs in `{args.out.relative_to(ROOT)}/`, not committed). "
            "Test accuracy in %, mean ± std over seeds; pseudo-label columns: the last round that added labels, "
            "mean over seeds.\n\n" + "\n\n".join(sections))
    write_section(ROOT / "docs" / "results.md", "graph_pl", body, tag="results")


if __name__ == "__main__":
    main()
