import math

import pytest
from scipy import stats as sps

from kdforge.plans.stats import paired, summarize, t975


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 30, 31, 45, 100, 1000])
def test_t975_matches_scipy(df: int) -> None:
    assert t975(df) == pytest.approx(sps.t.ppf(0.975, df), abs=1.5e-3)


def test_t975_refuses_zero_df() -> None:
    with pytest.raises(ValueError):
        t975(0)


def test_summarize_hand_values() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    assert s.half_width == pytest.approx(3.182 * math.sqrt(5 / 3) / 2)
    assert math.isnan(summarize([7.0]).half_width)


def test_paired_interval_matches_scipy_ttest() -> None:
    ref = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.81, 4: 0.80}
    other = {0: 0.84, 1: 0.82, 2: 0.82, 3: 0.85, 4: 0.83, 9: 0.99}  # seed 9 has no partner: ignored
    p = paired(ref, other)
    assert p is not None and p.n == 5
    diffs = [other[s] - ref[s] for s in range(5)]
    lo, hi = sps.t.interval(0.95, 4, loc=sum(diffs) / 5, scale=sps.sem(diffs))
    assert (p.low, p.high) == pytest.approx((lo, hi), abs=1e-4)
    assert (p.wins, p.losses) == (4, 0)  # seed 1 is a tie
    assert p.verdict == "above"


def test_paired_verdicts() -> None:
    assert paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 0.5, 1: 0.6, 2: 0.55}).verdict == "below"
    assert paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 1.1, 1: 0.9, 2: 1.05}).verdict == "tie"
    assert paired({0: 1.0}, {0: 2.0}).verdict == "tie"  # one seed: no interval, no ordering
    assert paired({0: 1.0}, {1: 2.0}) is None


def test_paired_shown_is_what_tables_and_claims_print() -> None:
    p = paired({0: 0.80, 1: 0.82, 2: 0.79}, {0: 0.84, 1: 0.83, 2: 0.82})
    mean, interval = p.shown(100)
    assert mean == f"{p.mean * 100:+.2f}" and mean.startswith("+")
    assert interval == f"[{p.low * 100:+.2f}, {p.high * 100:+.2f}]"
    assert p.shown()[0] == f"{p.mean:+.2f}"  # scale 1: the metric as logged
    assert paired({0: 1.0}, {0: 0.5}).shown() == ("-0.50", None)  # one seed: no interval
