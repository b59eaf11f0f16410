"""Bad input for distillation with unlabeled examples, through the CLI: one line, exit code 2, no traceback, and
nothing trained (the teacher store stays empty)."""
from pathlib import Path

import pytest

from kdforge.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits_pseudo_hard.yaml"


@pytest.mark.parametrize("overrides,needle", [
    (["data.label_budget.labeled=100000"], "data.label_budget.labeled=100000.0 of 1007 training samples leaves no "
                                           "labeled or no unlabeled sample"),
    (["data.label_budget.labeled=5"], "data.label_budget.labeled=5.0 leaves class(es)"),
    (["data.val_fraction=0.02", "method.name=forward_correction"],
     "data: the validation split has 29 labeled samples, too few to fit the transition matrix of method "
     "'forward_correction' (method.params.min_val_samples=50)"),
    (["data.val_fraction=0.02", "method.name=slam"], "too few to fit α(x) and k of method 'slam'"),
    (["data.label_budget=null", "method.name=slam"], "method 'slam' distills on unlabeled examples, but the data has "
                                                     "none"),
])
def test_bad_label_budget_or_validation_is_one_line_before_training(tmp_path, capsys, overrides, needle):
    store = tmp_path / "teachers"
    code = main(["distill", str(CONFIG), *overrides, f"teacher.store_dir={store}", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err
    assert not store.exists() and not (tmp_path / "run").exists()  # refused before any teacher or student ran
