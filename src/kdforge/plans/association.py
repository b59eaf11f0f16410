"""Rank association across the rows of a plan (issue 26, Zhou et al. 2021: the share of regularization samples
against the student's accuracy across teachers of graded quality): Spearman's rho between the rows' seed means of
two metrics, with a 95 % interval from a bootstrap over seeds stratified by row (each row's seeds resampled with
replacement, its means recomputed, rho recomputed), and Kendall's tau over every (row, seed) run."""
from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kdforge.errors import ConfigError


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata's default)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; nan when either side is constant."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the (average-tie) ranks."""
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"spearman needs two sequences of one length >= 3, got {len(x)} and {len(y)}")
    return pearson(ranks(x), ranks(y))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b over all pairs (ties in either variable corrected)."""
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom > 0 else math.nan


@dataclass(frozen=True)
class Association:
    rows: list[str]
    x_means: list[float]
    y_means: list[float]
    rho: float
    low: float   # 2.5 / 97.5 % percentiles of the stratified bootstrap (nan when no resample had a defined rho)
    high: float
    tau_runs: float
    runs: int

    @property
    def verdict(self) -> str:
        """'negative' / 'positive' where the interval excludes 0, else 'inconclusive' (also with no interval)."""
        return "negative" if self.high < 0 else "positive" if self.low > 0 else "inconclusive"


def rank_association(x: Mapping[str, Mapping[int, float]], y: Mapping[str, Mapping[int, float]],
                     resamples: int = 2000, seed: int = 0) -> Association:
    """rho between the row means of x and y (seeds paired within a row), with the stratified seed bootstrap."""
    rows = [r for r in x if set(x[r]) & set(y.get(r, {}))]
    if len(rows) < 3:
        raise ConfigError(f"rank association needs at least 3 rows with runs of both metrics; found {len(rows)}")
    seeds = {r: sorted(set(x[r]) & set(y[r])) for r in rows}

    def means(pick: Mapping[str, list[int]]) -> tuple[list[float], list[float]]:
        return ([sum(x[r][s] for s in pick[r]) / len(pick[r]) for r in rows],
                [sum(y[r][s] for s in pick[r]) / len(pick[r]) for r in rows])

    mx, my = means(seeds)
    rng = random.Random(seed)
    boot: list[float] = []
    # with one seed in some row a resample cannot move that row: no interval is claimed (verdict inconclusive)
    for _ in range(resamples if min(len(v) for v in seeds.values()) > 1 else 0):
        bx, by = means({r: rng.choices(seeds[r], k=len(seeds[r])) for r in rows})
        rho = spearman(bx, by)
        if not math.isnan(rho):
            boot.append(rho)
    boot.sort()
    low, high = (boot[int(0.025 * len(boot))], boot[min(len(boot) - 1, int(0.975 * len(boot)))]) if boot \
        else (math.nan, math.nan)
    xs = [x[r][s] for r in rows for s in seeds[r]]
    ys = [y[r][s] for r in rows for s in seeds[r]]
    return Association(rows, mx, my, spearman(mx, my), low, high, kendall_tau_b(xs, ys), len(xs))


def describe(a: Association, x: str, y: str) -> str:
    lines = [f"| row | {x} (mean) | {y} (mean) |", "|---|---|---|"]
    lines += [f"| {r} | {vx:.4f} | {vy:.4f} |" for r, vx, vy in zip(a.rows, a.x_means, a.y_means)]
    lines.append(f"\nSpearman rho over {len(a.rows)} rows = {a.rho:+.3f}, 95 % stratified seed bootstrap "
                 f"[{a.low:+.3f}, {a.high:+.3f}] ({a.verdict}); Kendall tau-b over {a.runs} runs = {a.tau_runs:+.3f}")
    return "\n".join(lines) + "\n"
