"""`kdforge reproduce` end to end on a sliver of digits (no files needed): records, resume, bit-for-bit reruns."""
import json
from pathlib import Path

import pytest

from kdforge.cli import main
from kdforge.plans import reproduce

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "results" / "plans" / "digits_demo.yaml"


def run_sliver(tmp: Path, name: str, jobs: int) -> Path:
    return reproduce(PLAN, jobs=jobs, sliver=True, threads=1, results_dir=tmp / name,
                     runs_dir=tmp / name / "runs", teacher_store=tmp / "teachers")


@pytest.mark.slow
def test_sliver_records_regenerate_bit_for_bit(tmp_path: Path) -> None:
    first = run_sliver(tmp_path, "a", jobs=1)
    records = [json.loads(line) for line in first.read_text().splitlines()]
    assert [(r["row"], r["seed"]) for r in records] == [("ce", 0), ("kd", 0), ("wsl", 0)]
    for r in records:
        assert set(r["test"]) >= {"top1", "nll", "ece"} and r["student"] and r["data"] and r["env"]["threads"] == 1
    assert records[1]["teacher"]["weights"] and records[0]["commit"]
    # the same plan in two worker processes, same thread count: the same bytes
    second = run_sliver(tmp_path, "b", jobs=2)
    assert second.read_bytes() == first.read_bytes()
    # resume: nothing left to do, nothing rewritten
    before = first.stat().st_mtime_ns
    run_sliver(tmp_path, "a", jobs=1)
    assert first.stat().st_mtime_ns == before
    assert "0 runs to do" in (tmp_path / "a" / "runs" / "digits_demo" / "reproduce.log").read_text()


def test_bad_plan_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nseeds: [0]\nrows: [{label: a, config: nowhere.yaml}]\n")
    assert main(["reproduce", str(bad), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere.yaml" in err[0] and "was not found" in err[0]
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.slow
def test_one_teacher_per_recipe_trains_to_the_same_weights(tmp_path: Path) -> None:
    """Teachers are stored by the fingerprint of their recipe and data; training one twice (two stores, same
    thread count) gives the same folder name and the same weights."""
    import torch

    from kdforge.api import build_data, load_config, prepare_teacher, teacher_dir

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folders = []
        for store in ("s1", "s2"):
            cfg = load_config(REPO / "configs" / "digits_kd.yaml",
                              ["teacher.recipe.train.epochs=2", f"teacher.store_dir={tmp_path / store}"])
            prepare_teacher(cfg, build_data(cfg.data))
            folders.append(teacher_dir(cfg))
    finally:
        torch.set_num_threads(threads)
    assert folders[0].name == folders[1].name
    sha = [json.loads((f / "model.json").read_text())["weights"]["sha256"] for f in folders]
    assert sha[0] == sha[1]
