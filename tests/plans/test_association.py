"""Rank association across a plan's rows (issue 26, Zhou et al.'s regularization samples vs accuracy): ranks with
ties, Spearman and Kendall hand values, the stratified seed bootstrap, and the `kdforge results association` line."""
from __future__ import annotations

import json
import math

import pytest

from kdforge.errors import ConfigError
from kdforge.plans.association import kendall_tau_b, rank_association, ranks, spearman


def test_ranks_and_spearman_hand_values() -> None:
    assert ranks([10.0, 30.0, 20.0, 20.0]) == [1.0, 4.0, 2.5, 2.5]
    assert spearman([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (1,3,2,4): 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant -> 4 / 6
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_bootstrap_interval_is_stratified_by_row() -> None:
    # four rows; x rises and y falls row by row, with seed noise far smaller than the gaps: rho = -1 in every
    # resample, so the interval is a point
    x = {f"t{r}": {s: r + 0.01 * s for s in range(5)} for r in range(4)}
    y = {f"t{r}": {s: -r - 0.01 * s for s in range(5)} for r in range(4)}
    a = rank_association(x, y, resamples=200)
    assert a.rho == pytest.approx(-1.0) and a.low == pytest.approx(-1.0) and a.high == pytest.approx(-1.0)
    assert a.verdict == "negative" and a.runs == 20
    # overlapping rows: the interval widens to include 0
    noisy = {f"t{r}": {s: r + 3.0 * ((s * 7 + r * 3) % 5 - 2) for s in range(5)} for r in range(4)}
    b = rank_association(noisy, y, resamples=500)
    assert b.low < 0 < b.high and b.verdict == "inconclusive"
    one = rank_association({r: {0: v[0]} for r, v in x.items()}, {r: {0: v[0]} for r, v in y.items()})
    assert one.rho == pytest.approx(-1.0) and math.isnan(one.low) and one.verdict == "inconclusive"
    with pytest.raises(ConfigError, match="at least 3 rows"):
        rank_association({"a": {0: 1.0}, "b": {0: 2.0}}, {"a": {0: 1.0}, "b": {0: 2.0}})


def test_results_association_command(tmp_path, capsys) -> None:
    from kdforge.cli import main

    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "assoc.yaml").write_text("title: t\nseeds: [0, 1]\nrows:\n" + "".join(
        f"  - {{label: t{r}, config: fashion_mnist_kd.yaml}}\n" for r in range(3)))
    recs = [{"row": f"t{r}", "seed": s, "test": {"top1": 0.9 - 0.1 * r + 0.01 * s},
             "method_stats": {"reg_fraction": 0.1 * r + 0.001 * s}} for r in range(3) for s in range(2)]
    (tmp_path / "assoc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["results", "association", str(plans / "assoc.yaml"), "--x", "method.reg_fraction",
                 "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Spearman rho over 3 rows = -1.000" in out and "| t2 | 0.2005 | 0.7050 |" in out
