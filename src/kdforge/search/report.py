"""`kdforge search report`: the best programs of a study, their proxy fitness curves, and fitness over generations,
read from the study's storage (the same storage optuna-dashboard can show)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from kdforge.errors import require_extra

require_extra("optuna", "search", "the distiller search")  # one line naming the extra, before the imports below

import optuna
from optuna.trial import FrozenTrial, TrialState

from kdforge.errors import ConfigError
from kdforge.fileio import atomic_write, atomic_write_text
from kdforge.search.evolve import generation, is_rejected
from kdforge.search.runner import _describe, open_study_by_name, progress_line
from kdforge.search.space import load_search_config


def evaluated(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Candidates trained to a fitness (duplicates, whose fitness was copied, left out)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]


def report_study(words: list[str], study: str | None = None, storage: str | None = None, out: Path | None = None,
                 top: int = 10) -> str:
    """`kdforge search report`: the study of a search config (`words`: its path and overrides), or the study
    `study` on `storage` with no config at all. Only the name and the storage select the study: a config whose
    space or evolution differs from the study's does not stop a report (the study's own population is used)."""
    if words:
        cfg, _ = load_search_config(words[0], words[1:])
        name, url, folder = study or cfg.name, storage or cfg.storage_url, out or cfg.out_dir
        budget: int | None = cfg.evolution.trials
    elif study and storage:
        name, url, folder, budget = study, storage, out or Path("runs/search") / study, None
    else:
        raise ConfigError("search report: give the search config (kdforge search report configs/search/x.yaml) or "
                          "the study: kdforge search report --study NAME --storage URL")
    return report(open_study_by_name(name, url), folder, top, budget)


def report(found: optuna.Study, out: Path, top: int = 10, budget: int | None = None) -> str:
    """Markdown: progress, the `top` best programs, rejection reasons; writes report.md and two plots into `out`."""
    trials = found.get_trials(deepcopy=False)
    valid = sorted(evaluated(trials), key=lambda t: -t.value)  # type: ignore[operator]
    evolution = json.loads(found.user_attrs.get("signature", "{}")).get("evolution", {})
    pop = int(evolution.get("population", 1))
    budget = budget or int(found.user_attrs.get("budget", len(trials)))  # recorded by the workers
    name = found.study_name
    lines = [f"# Distiller search {name!r}", "", progress_line(found, pop, budget), "",
             "| rank | trial | generation | fitness % | proxy curve % | program | s |", "|---|---|---|---|---|---|---|"]
    for rank, t in enumerate(valid[:top], 1):
        curve = " / ".join(f"{v:.1f}" for v in t.user_attrs.get("curve", []))
        lines.append(f"| {rank} | {t.number} | {generation(t.number, pop)} | {t.value:.2f} | {curve} | "
                     f"{_describe(t.user_attrs['program'])} | {t.user_attrs.get('seconds', '')} |")
    reasons = Counter(str(t.user_attrs["rejected"]).split(":")[0] for t in trials if is_rejected(t))
    if reasons:
        lines += ["", "Rejected: " + ", ".join(f"{n} {why}" for why, n in reasons.most_common())]
    out.mkdir(parents=True, exist_ok=True)
    if valid:
        plot_generations(trials, pop, out / "fitness_by_generation.png", name)
        plot_curves(valid[:5], out / "fitness_curves.png", name)
        lines += ["", f"Plots: {out / 'fitness_by_generation.png'}, {out / 'fitness_curves.png'}"]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    return text


def _pyplot() -> Any:
    matplotlib = require_extra("matplotlib", "report", "the search report's plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_generations(trials: list[FrozenTrial], population: int, path: Path, title: str) -> Path:
    """Each candidate's fitness against its generation (rejected ones at the bottom, marked x), with the best so
    far per generation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    valid = evaluated(trials)
    ax.scatter([generation(t.number, population) for t in valid], [t.value for t in valid], s=14, alpha=0.7,
               label="candidate")
    floor = min((t.value for t in valid), default=0.0)
    rejected = [t for t in trials if is_rejected(t)]
    ax.scatter([generation(t.number, population) for t in rejected], [floor] * len(rejected), marker="x",
               color="tab:red", s=14, label="rejected")
    gens = sorted({generation(t.number, population) for t in valid})
    best, running = [], float("-inf")
    for g in gens:
        running = max([running, *(t.value for t in valid if generation(t.number, population) == g)])
        best.append(running)
    ax.plot(gens, best, color="black", label="best so far")
    return _finish(plt, fig, ax, path, ("generation", "proxy fitness (val top-1 %)",
                                    f"{title}: one dot per candidate (one proxy run, no interval)"))


def plot_curves(trials: list[FrozenTrial], path: Path, title: str) -> Path:
    """Validation top-1 after each proxy epoch for the given (best) candidates."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for t in trials:
        curve = t.user_attrs.get("curve", [])
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=f"trial {t.number}: {t.value:.2f}")
    return _finish(plt, fig, ax, path, ("proxy epoch", "val top-1 %",
                                    f"{title}: best programs (one proxy run each)"))


def _finish(plt: Any, fig: Any, ax: Any, path: Path, labels: tuple[str, str, str]) -> Path:
    """Axis labels and title, legend and grid, then the PNG written atomically."""
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(labels[2])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path
