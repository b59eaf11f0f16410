"""Statistics for tables of seeds: mean ± sample standard deviation, and paired differences (same seed) with a
95 % Student-t interval and wins out of seeds. An ordering is claimed only where the interval excludes zero."""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Two-sided 95 % quantiles of Student's t, t_{0.975, df} for df = 1..30 (Fisher & Yates' table); df > 30 uses
# the large-sample correction below. Kept here so the tables need no SciPy.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """t_{0.975, df}: exact to 3 decimals for df <= 30, Cornish-Fisher expansion beyond (error < 1e-3)."""
    if df < 1:
        raise ValueError("t975 needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation; 0 for one value

    @property
    def half_width(self) -> float:
        """Half-width of the 95 % t-interval of the mean (nan for one value)."""
        return t975(self.n - 1) * self.std / math.sqrt(self.n) if self.n > 1 else math.nan


def summarize(values: Sequence[float]) -> Summary:
    values = list(values)
    if not values:
        raise ValueError("summarize: no values")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Summary(len(values), statistics.fmean(values), std)


@dataclass(frozen=True)
class Paired:
    """other − reference over the seeds both have."""
    n: int
    mean: float
    low: float   # 95 % t-interval of the mean difference (nan when n < 2)
    high: float
    wins: int    # seeds where other > reference
    losses: int  # seeds where other < reference

    @property
    def verdict(self) -> str:
        """'above' / 'below' where the interval excludes zero, else 'tie'."""
        if self.n < 2 or math.isnan(self.low):
            return "tie"
        if self.low > 0:
            return "above"
        if self.high < 0:
            return "below"
        return "tie"

    def shown(self, scale: float = 1.0) -> tuple[str, str | None]:
        """(mean, interval) as the tables and the claims ledger print them, at `scale` (100 for percentage
        points): '+1.23' and '[+0.45, +2.01]'; the interval is None with one seed (there is none)."""
        interval = None if self.n < 2 else f"[{self.low * scale:+.2f}, {self.high * scale:+.2f}]"
        return f"{self.mean * scale:+.2f}", interval


def paired(reference: Mapping[int, float], other: Mapping[int, float]) -> Paired | None:
    """The paired difference over the seeds in both (None when they share none)."""
    seeds = sorted(set(reference) & set(other))
    if not seeds:
        return None
    diffs = [other[s] - reference[s] for s in seeds]
    s = summarize(diffs)
    half = s.half_width
    return Paired(s.n, s.mean, s.mean - half, s.mean + half,
                  sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
