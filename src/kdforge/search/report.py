"""`kdforge search report`: the best programs of a study, their proxy fitness curves, and fitness over generations,
read from the study's storage (the same storage optuna-dashboard can show)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from kdforge.errors import require_extra

require_extra("optuna", "search", "the distiller search")  # one line naming the extra, before the imports below

from optuna.trial import FrozenTrial, TrialState

from kdforge.fileio import atomic_write, atomic_write_text
from kdforge.search.evolve import generation, is_rejected
from kdforge.search.runner import _describe, open_study, progress_line
from kdforge.search.space import SearchConfig


def evaluated(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Candidates trained to a fitness (duplicates, whose fitness was copied, left out)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]


def report(cfg: SearchConfig, url: str, top: int = 10) -> str:
    """Markdown: progress, the `top` best programs, rejection reasons; writes report.md and two plots into the
    search folder."""
    study = open_study(cfg, url, create=False)  # the same checks as a worker: the config must be the study's
    trials = study.get_trials(deepcopy=False)
    valid = sorted(evaluated(trials), key=lambda t: -t.value)  # type: ignore[operator]
    pop = cfg.evolution.population
    lines = [f"# Distiller search {cfg.name!r}", "", progress_line(study, pop, cfg.evolution.trials), "",
             "| rank | trial | generation | fitness % | proxy curve % | program | s |", "|---|---|---|---|---|---|---|"]
    for rank, t in enumerate(valid[:top], 1):
        curve = " / ".join(f"{v:.1f}" for v in t.user_attrs.get("curve", []))
        lines.append(f"| {rank} | {t.number} | {generation(t.number, pop)} | {t.value:.2f} | {curve} | "
                     f"{_describe(t.user_attrs['program'])} | {t.user_attrs.get('seconds', '')} |")
    reasons = Counter(str(t.user_attrs["rejected"]).split(":")[0] for t in trials if is_rejected(t))
    if reasons:
        lines += ["", "Rejected: " + ", ".join(f"{n} {why}" for why, n in reasons.most_common())]
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if valid:
        plot_generations(trials, pop, out / "fitness_by_generation.png", cfg.name)
        plot_curves(valid[:5], out / "fitness_curves.png", cfg.name)
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
