"""Tables and figures generated from a plan's records, never typed: Markdown with per-seed values and paired
differences, the docs' marked sections kept equal to them, and a sorted dot plot with intervals."""
from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdforge.errors import ConfigError, require_extra
from kdforge.fileio import atomic_write_text
from kdforge.plans.plan import Plan, load_plan
from kdforge.plans.records import Record, read_records
from kdforge.plans.stats import paired, summarize

_PERCENT = ("top1", "acc", "ece", "agreement", "share", "frac")
_TITLES = {"top1": "top-1", "nll": "NLL", "ece": "ECE", "agreement": "agree", "kl_ts": "KL(t‖s)"}


def is_percent(metric: str) -> bool:
    """Shares and accuracies are shown in percent; everything else as logged."""
    return any(tok in metric.rsplit(".", 1)[-1] for tok in _PERCENT)


def value(record: Record, metric: str) -> float | None:
    """`top1` -> the test metric, `val.top1` / `method.slam_k` / `test.top1` -> that section's value."""
    section, _, name = metric.rpartition(".") if "." in metric else ("test", "", metric)
    section = {"method": "method_stats"}.get(section, section)
    got = record.get(section, {}).get(name)
    return None if got is None else float(got)


def _title(metric: str) -> str:
    name = metric.rsplit(".", 1)[-1]
    shown = _TITLES.get(name, name)
    prefix = "" if "." not in metric or metric.split(".")[0] in ("test", "method") else metric.split(".")[0] + " "
    return f"{prefix}{shown}{' %' if is_percent(metric) else ''}"


def _fmt(x: float, metric: str) -> str:
    return f"{100 * x:.2f}" if is_percent(metric) else f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def by_row(plan: Plan, records: Sequence[Record], metric: str) -> dict[str, dict[int, float]]:
    """{row label: {seed: value}} for the plan's rows and seeds, in the plan's order."""
    out: dict[str, dict[int, float]] = {r.label: {} for r in plan.rows}
    for rec in records:
        v = value(rec, metric)
        if rec["row"] in out and rec["seed"] in plan.seeds and v is not None and math.isfinite(v):
            out[rec["row"]][rec["seed"]] = v
    return out


def markdown(plan: Plan, records: Sequence[Record]) -> str:
    """The plan's table: mean ± std per metric, per-seed values and the paired difference of the first metric to
    the reference row (95 % t-interval, wins/losses), with what produced it."""
    first = plan.metrics[0]
    per_metric = {m: by_row(plan, records, m) for m in plan.metrics}
    head = ["row", "n", *[_title(m) for m in plan.metrics]]
    if plan.reference:
        head += [f"Δ {_title(first)} vs {plan.reference} [95 % CI]", "wins/losses"]
    head.append(f"per seed ({_title(first)})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = per_metric[first].get(plan.reference or "", {})
    for row in plan.rows:
        seeds = per_metric[first][row.label]
        if not seeds:
            lines.append("| " + " | ".join([row.label, "0", *["–"] * (len(head) - 2)]) + " |")
            continue
        cells = [row.label, str(len(seeds))]
        for m in plan.metrics:
            vals = list(per_metric[m][row.label].values())
            s = summarize(vals) if vals else None
            cells.append("–" if s is None else f"{_fmt(s.mean, m)} ± {_fmt(s.std, m)}" if s.n > 1 else _fmt(s.mean, m))
        if plan.reference:
            cells += _paired_cells(row.label, plan.reference, ref, seeds, first)
        cells.append(" / ".join(_fmt(seeds[s], first) for s in sorted(seeds)))
        lines.append("| " + " | ".join(cells) + " |")
    return _caption(plan, records) + "\n\n" + "\n".join(lines) + "\n" + _pairs_table(plan, per_metric)


def _pairs_table(plan: Plan, per_metric: dict[str, dict[str, dict[int, float]]]) -> str:
    """The plan's further comparisons: a - b per metric on shared seeds, 95 % interval, wins/losses."""
    if not plan.pairs:
        return ""
    shown = [m for m in plan.metrics if not m.startswith("method.")] or plan.metrics[:1]  # outcomes, not diagnostics
    head = ["comparison (same seed)", "n", *[f"Δ {_title(m)} [95 % CI]" for m in shown], "wins/losses"]
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a, b in plan.pairs:
        cells, first = [f"{a} − {b}"], None
        for m in shown:
            p = paired(per_metric[m][b], per_metric[m][a])
            first = first or p
            cells.append("–" if p is None else _paired_cells(a, b, per_metric[m][b], per_metric[m][a], m)[0])
        cells.insert(1, str(first.n) if first else "0")
        cells.append(f"{first.wins}/{first.losses}" if first else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _paired_cells(label: str, reference: str, ref: dict[int, float], seeds: dict[int, float], metric: str) -> list[str]:
    if label == reference:
        return ["(reference)", ""]
    p = paired(ref, seeds)
    if p is None:
        return ["–", ""]
    mean, interval = p.shown(100 if is_percent(metric) else 1)
    mark = {"above": " ▲", "below": " ▼", "tie": ""}[p.verdict]
    return [f"{mean}{'' if interval is None else f' {interval}'}{mark}", f"{p.wins}/{p.losses} of {p.n}"]


def _caption(plan: Plan, records: Sequence[Record]) -> str:
    commits = sorted({r.get("commit", "?") for r in records})
    threads = sorted({str(r.get("env", {}).get("threads", "?")) for r in records})
    torch_v = sorted({r.get("env", {}).get("torch", "?") for r in records})
    seeds = ", ".join(map(str, plan.seeds))
    ref = (f" Δ: paired difference to `{plan.reference}` on the same seed, mean and 95 % Student-t interval; ▲ / ▼ "
           "where the whole interval lies above / below zero (higher / lower: for NLL and ECE lower is better), "
           "otherwise a tie at this budget." if plan.reference else "")
    return (f"**{plan.title}.** {plan.about.strip()} Seeds {seeds}; cells are mean ± sample std over seeds.{ref} "
            f"Generated from `results/{plan.key}.jsonl` (commit {', '.join(commits) or '–'}, torch "
            f"{', '.join(torch_v) or '–'}, {', '.join(threads) or '–'} thread(s) per run) by "
            f"`kdforge results table {plan.key}`; rerun with `kdforge reproduce results/plans/{plan.key}.yaml`.")


def table_for(key_or_plan: str | Path, results_dir: str | Path = "results") -> str:
    plan_file = plan_path(key_or_plan, results_dir)
    plan = load_plan(plan_file)
    return markdown(plan, read_records(Path(results_dir) / f"{plan.key}.jsonl"))


def plan_path(key_or_plan: str | Path, results_dir: str | Path = "results") -> Path:
    given = Path(key_or_plan)
    if given.suffix in (".yaml", ".yml"):
        return given
    path = Path(results_dir) / "plans" / f"{key_or_plan}.yaml"
    if not path.is_file():
        raise ConfigError(f"no plan {path}: give a plan key of {results_dir}/plans/ or a plan file")
    return path


MARKER = re.compile(r"<!-- table:(?P<key>[A-Za-z0-9_.-]+) -->\n.*?<!-- /table:(?P=key) -->", re.S)


LEDGER = re.compile(r"<!-- ledger:claims -->\n.*?<!-- /ledger:claims -->", re.S)


def sync_docs(paths: Sequence[Path], results_dir: str | Path = "results", check: bool = False) -> list[str]:
    """Rewrite every `<!-- table:KEY -->` section (and the `<!-- ledger:claims -->` one) of the given Markdown
    files from the records; with `check`, write nothing and return the sections that differ from them."""
    from kdforge.plans.claims import ledger

    stale: list[str] = []
    for path in paths:
        text = path.read_text()

        def fill(m: re.Match[str]) -> str:
            body = table_for(m["key"], results_dir)
            return f"<!-- table:{m['key']} -->\n{body}<!-- /table:{m['key']} -->"

        def fill_ledger(_: re.Match[str]) -> str:
            return f"<!-- ledger:claims -->\n{ledger(Path(results_dir))}<!-- /ledger:claims -->"

        new = LEDGER.sub(fill_ledger, MARKER.sub(fill, text))
        if new != text:
            stale += [f"{path}:{m['key']}" for m in MARKER.finditer(text) if fill(m) != m.group(0)]
            stale += [f"{path}:claims" for m in LEDGER.finditer(text) if fill_ledger(m) != m.group(0)]
            if not check:
                atomic_write_text(path, new)
    return stale


def figure(plan: Plan, records: Sequence[Record], path: Path, metric: str | None = None) -> Path:
    """Rows sorted by their mean: seeds as grey dots, the mean with its 95 % t-interval; beside it, each row's
    paired difference to the reference with its interval and the zero line."""
    matplotlib = require_extra("matplotlib", "report", "a plan's figure")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or plan.metrics[0]
    scale = 100 if is_percent(metric) else 1
    rows = {k: v for k, v in by_row(plan, records, metric).items() if v}
    order = sorted(rows, key=lambda k: summarize(list(rows[k].values())).mean)
    panels = 2 if plan.reference and plan.reference in rows else 1
    title = textwrap.fill(plan.title, width=62 * panels)  # a long title wrapped, not cut at the figure's edges
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 0.42 * len(order) + 1.4 + 0.2 * title.count("\n") + 0.2),
                             squeeze=False, sharey=True)
    ax = axes[0][0]
    for y, label in enumerate(order):
        vals = [v * scale for v in rows[label].values()]
        s = summarize(vals)
        ax.scatter(vals, [y] * len(vals), color="0.65", s=14, zorder=2)
        ax.errorbar(s.mean, y, xerr=0 if s.n < 2 else s.half_width, fmt="o", color="C0", capsize=3, zorder=3)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(_title(metric))
    ax.grid(axis="x", alpha=0.3)
    n = max(len(v) for v in rows.values())
    ax.set_title(f"mean, 95 % t-interval; dots: seeds (n ≤ {n})", fontsize=9)
    if panels == 2:
        _difference_panel(axes[0][1], plan, rows, order, metric, scale)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _difference_panel(ax: Any, plan: Plan, rows: dict[str, dict[int, float]], order: list[str], metric: str,
                      scale: float) -> None:
    ref = rows[plan.reference]  # type: ignore[index]
    for y, label in enumerate(order):
        p = None if label == plan.reference else paired(ref, rows[label])
        if p is None:
            continue
        color = {"above": "C2", "below": "C3", "tie": "0.3"}[p.verdict]
        err = 0 if p.n < 2 else [[(p.mean - p.low) * scale], [(p.high - p.mean) * scale]]
        ax.errorbar(p.mean * scale, y, xerr=err, fmt="o", color=color, capsize=3)
    ax.axvline(0, color="0.5", lw=1)
    ax.set_xlabel(f"Δ {_title(metric)} vs {plan.reference} (same seed)")
    ax.set_title("paired difference, 95 % t-interval", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
