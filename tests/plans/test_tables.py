from pathlib import Path

import pytest
import yaml

from kdforge.errors import ConfigError
from kdforge.plans import figure, load_plan, markdown, sync_docs
from kdforge.plans.records import read_records, write_records

PLAN = {
    "key": "toy", "title": "Toy table", "about": "Synthetic records.", "seeds": [0, 1, 2], "reference": "ce",
    "metrics": ["top1", "nll", "method.k"],
    "rows": [{"label": "ce", "config": "x.yaml"}, {"label": "kd", "config": "x.yaml"},
             {"label": "bad", "config": "x.yaml"}],
}


def records() -> list[dict]:
    top1 = {"ce": [0.80, 0.81, 0.79], "kd": [0.84, 0.85, 0.83], "bad": [0.70, 0.90, 0.75]}
    return [{"row": row, "seed": s, "test": {"top1": v, "nll": 0.5 + s / 10}, "method_stats": {"k": 3},
             "commit": "abc123", "env": {"torch": "2.13.0", "threads": 1}}
            for row, vals in top1.items() for s, v in enumerate(vals)]


def write_plan(tmp_path: Path, **changes) -> Path:
    (tmp_path / "plans").mkdir(exist_ok=True)
    path = tmp_path / "plans" / "toy.yaml"
    path.write_text(yaml.safe_dump({**PLAN, **changes}))
    return path


def test_markdown_has_paired_intervals_and_per_seed_values(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path))
    text = markdown(plan, records())
    kd = next(line for line in text.splitlines() if line.startswith("| kd "))
    assert "84.00 ± 1.00" in kd            # mean ± std in percent
    assert "+4.00 [+4.00, +4.00] ▲" in kd   # constant difference: a zero-width interval above zero
    assert "3/0 of 3" in kd and "84.00 / 85.00 / 83.00" in kd
    bad = next(line for line in text.splitlines() if line.startswith("| bad "))
    assert "▲" not in bad and "▼" not in bad  # +1.67 with a wide interval: a tie, not an ordering
    assert "| 3.000 |" in kd.replace(" ± 0.000", "")  # a method statistic, as logged
    assert "commit abc123" in text and "1 thread(s)" in text


def test_pairs_table_compares_any_two_rows(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, pairs=[["kd", "bad"]]))
    line = next(x for x in markdown(plan, records()).splitlines() if x.startswith("| kd − bad"))
    assert "| 3 |" in line and "+5.67" in line  # (84 + 85 + 83 - 70 - 90 - 75) / 3 points
    with pytest.raises(ConfigError, match="pairs: 'nope'"):
        load_plan(write_plan(tmp_path, pairs=[["kd", "nope"]]))


def test_plan_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reference 'nope' is not a row label"):
        load_plan(write_plan(tmp_path, reference="nope"))
    with pytest.raises(ConfigError, match="appears twice"):
        load_plan(write_plan(tmp_path, rows=[PLAN["rows"][0], PLAN["rows"][0]]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_plan(tmp_path / "missing.yaml")


def test_records_file_is_sorted_and_canonical(tmp_path: Path) -> None:
    recs = records()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_records(a, recs, ["ce", "kd", "bad"])
    write_records(b, list(reversed(recs)), ["ce", "kd", "bad"])
    assert a.read_bytes() == b.read_bytes()
    assert [(r["row"], r["seed"]) for r in read_records(a)][:4] == [("ce", 0), ("ce", 1), ("ce", 2), ("kd", 0)]


def test_docs_sections_follow_their_records(tmp_path: Path) -> None:
    write_plan(tmp_path)
    write_records(tmp_path / "toy.jsonl", records(), ["ce", "kd", "bad"])
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- table:toy -->\nold typed table\n<!-- /table:toy -->\nend\n")
    assert sync_docs([doc], tmp_path, check=True) == [f"{doc}:toy"]
    assert "old typed table" in doc.read_text()  # check writes nothing
    sync_docs([doc], tmp_path)
    assert "old typed table" not in doc.read_text() and doc.read_text().endswith("end\n")
    assert sync_docs([doc], tmp_path, check=True) == []
    changed = records()
    changed[0]["test"]["top1"] = 0.5
    write_records(tmp_path / "toy.jsonl", changed, ["ce", "kd", "bad"])
    assert sync_docs([doc], tmp_path, check=True) == [f"{doc}:toy"]


def test_figure_is_written(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path))
    out = figure(plan, records(), tmp_path / "f.png")
    assert out.stat().st_size > 5000


def test_claims_ledger_status_follows_the_intervals(tmp_path: Path) -> None:
    from kdforge.plans.claims import ledger

    write_plan(tmp_path)
    write_records(tmp_path / "toy.jsonl", records(), ["ce", "kd", "bad"])
    claims = [
        {"paper": "P1", "claim": "kd beats ce", "evidence": [{"plan": "toy", "a": "kd", "b": "ce"}]},
        {"paper": "P1", "claim": "ce beats kd", "evidence": [{"plan": "toy", "a": "ce", "b": "kd"}]},
        {"paper": "P2", "claim": "bad beats ce", "evidence": [{"plan": "toy", "a": "bad", "b": "ce"}]},
        {"paper": "P2", "claim": "both", "evidence": [{"plan": "toy", "a": "kd", "b": "ce"},
                                                      {"plan": "toy", "a": "ce", "b": "kd"}]},
        {"paper": "P3", "claim": "a curve is unimodal", "status": "untested", "note": "plan to come"},
    ]
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(claims))
    text = ledger(tmp_path)
    status = {line.split("**")[1]: line.split("*")[-2] for line in text.splitlines() if line.startswith("- **")}
    assert status == {"kd beats ce": "confirmed at this scale", "ce beats kd": "contradicted at this scale",
                      "bad beats ce": "inconclusive at this scale", "both": "mixed", "a curve is unimodal": "untested"}
    assert "`toy`: kd − ce, top1: +4.00" in text and "kdforge reproduce results/plans/toy.yaml" in text
    doc = tmp_path / "claims.md"
    doc.write_text("# Claims\n<!-- ledger:claims -->\n<!-- /ledger:claims -->\n")
    assert sync_docs([doc], tmp_path, check=True) == [f"{doc}:claims"]
    sync_docs([doc], tmp_path)
    assert "confirmed at this scale" in doc.read_text() and sync_docs([doc], tmp_path, check=True) == []


def test_claims_ledger_with_one_seed_prints_no_interval(tmp_path: Path) -> None:
    from kdforge.plans.claims import ledger

    write_plan(tmp_path)
    write_records(tmp_path / "toy.jsonl", [r for r in records() if r["seed"] == 0], ["ce", "kd", "bad"])
    claims = [{"paper": "P1", "claim": "kd beats ce", "evidence": [{"plan": "toy", "a": "kd", "b": "ce"}]}]
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(claims))
    text = ledger(tmp_path)
    assert "nan" not in text
    assert "`toy`: kd − ce, top1: +4.00 (one seed: no interval), 1/0 of 1 seeds" in text
    assert "inconclusive at this scale" in text
