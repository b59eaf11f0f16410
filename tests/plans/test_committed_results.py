"""The committed plans and results: every plan loads with configs that validate, every record file belongs to a
plan and covers only its rows, and every generated section of the docs equals what its records give."""
from pathlib import Path

import pytest

from kdforge.plans import load_plan, sync_docs
from kdforge.plans.records import read_records
from kdforge.plans.runner import row_configs

REPO = Path(__file__).resolve().parents[2]
PLANS = sorted((REPO / "results" / "plans").glob("*.yaml"))
DOCS = sorted((REPO / "docs").glob("*.md"))


@pytest.mark.parametrize("plan_file", PLANS, ids=[p.stem for p in PLANS])
def test_plan_configs_validate(plan_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    plan = load_plan(plan_file)
    assert plan.key == plan_file.stem
    cfgs = row_configs(plan, plan_file)
    assert list(cfgs) == [r.label for r in plan.rows]
    sliver = row_configs(plan, plan_file, sliver=True)
    assert all(c.seed == cfgs[k].seed for k, c in sliver.items())


def test_record_files_belong_to_plans() -> None:
    for path in sorted((REPO / "results").glob("*.jsonl")):
        if path.name.endswith(".timing.jsonl"):
            continue
        plan_file = REPO / "results" / "plans" / f"{path.stem}.yaml"
        assert plan_file.exists(), f"{path} has no plan {plan_file}"
        labels = {r.label for r in load_plan(plan_file).rows}
        rows = {r["row"] for r in read_records(path)}
        assert rows <= labels, f"{path}: records of rows no longer in the plan: {sorted(rows - labels)}"


def test_docs_sections_equal_their_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert sync_docs(DOCS, REPO / "results", check=True) == [], "run: kdforge results docs"


def test_claims_name_existing_plans_and_rows() -> None:
    from kdforge.plans.claims import load_claims

    for claim in load_claims(REPO / "results" / "claims.yaml"):
        for ev in claim.evidence:
            labels = {r.label for r in load_plan(REPO / "results" / "plans" / f"{ev.plan}.yaml").rows}
            assert {ev.a, ev.b} <= labels, f"{claim.claim}: {ev.a!r} or {ev.b!r} is not a row of {ev.plan}"


def test_results_figure_cli_writes_its_default_file(tmp_path, monkeypatch):
    """`kdforge results figure KEY` without --out writes docs/img/results_KEY.png under the working folder."""
    from kdforge.cli import main

    results = Path(__file__).resolve().parents[2] / "results"
    monkeypatch.chdir(tmp_path)
    assert main(["results", "figure", "cpl_official", "--results-dir", str(results)]) in (0, None)
    png = tmp_path / "docs" / "img" / "results_cpl_official.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
