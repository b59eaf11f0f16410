"""Files written before the architecture refactor stay readable and resume bit for bit: a checkpoint, a saved
student and teacher, and a teacher-output cache written by the code at fd1b657 (tests/golden/v0/, see
tests/golden/method_weights.py `keep_files`)."""
from __future__ import annotations

import json
import shutil

from golden.method_weights import FILES, GOLDEN, digest, run_case
from support import tree_digest

ENTRIES = json.loads(GOLDEN.read_text())


def test_a_saved_student_loads_with_its_weights():
    import kdforge

    model = kdforge.load_model(FILES / "kd" / "student")
    assert digest(model.state_dict()) == ENTRIES["kd"]["digests"]["student"]


def test_a_checkpoint_resumes_to_the_same_weights_with_the_saved_teacher(tmp_path):
    shutil.copytree(FILES / "kd" / "run", tmp_path / "run")
    shutil.copytree(FILES / "kd" / "teachers", tmp_path / "teachers")  # found, not retrained: its folder is kept
    before = sorted(p.name for p in (tmp_path / "teachers").iterdir())
    assert run_case("kd", ENTRIES["kd"], tmp_path, resume=True) == ENTRIES["kd"]["digests"]
    assert sorted(p.name for p in (tmp_path / "teachers").iterdir()) == before
    assert not (tmp_path / "teachers" / before[0] / "run").exists()  # loaded, not trained again
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["resumed_from_epoch"] == 0


def test_a_teacher_cache_is_replayed_without_a_rebuild(tmp_path):
    (saved,) = (FILES / "kd+cache" / "cache").iterdir()
    shutil.copytree(saved, tmp_path / "saved_cache")
    before = tree_digest(tmp_path / "saved_cache")
    changes = {"path": str(tmp_path / "saved_cache"), "on_missing": "refuse", "on_mismatch": "refuse"}
    assert run_case("kd+cache", ENTRIES["kd+cache"], tmp_path, changes=changes) == ENTRIES["kd+cache"]["digests"]
    assert tree_digest(tmp_path / "saved_cache") == before
