"""The CLI's contract on bad input: one readable line on stderr, exit code 2, no traceback."""
import subprocess
import sys

import pytest
import yaml

from kdforge.api import build_data
from kdforge.cli import main
from kdforge.demo import preset
from kdforge.models import ModelSpec


def _config(tmp_path, **changes):
    raw = preset()
    raw.update(changes)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


@pytest.mark.parametrize("override,needle", [
    ("train.epohcs=3", "train.epohcs: unknown key"),
    ("train.epochs=many", "train.epochs"),
    ("method.name=kdd", "unknown method 'kdd'"),
])
def test_config_errors_are_one_line_exit_2(tmp_path, capsys, override, needle):
    code, out = _run(capsys, "distill", _config(tmp_path), override)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in out.err


def test_missing_data_file_names_the_file(tmp_path, capsys):
    code, out = _run(capsys, "distill", _config(tmp_path), "data.name=fashion_mnist", f"data.root={tmp_path}")
    assert code == 2
    assert "train-images-idx3-ubyte.gz" in out.err and len(out.err.strip().splitlines()) == 1


def test_truncated_checkpoint_on_eval(tmp_path, capsys):
    import torch

    import kdforge.models as models
    from kdforge.config.schema import DataConfig

    spec = build_data(DataConfig(name="digits")).spec
    folder = models.save_model(tmp_path / "m", models.build(ModelSpec(name="mlp"), spec), ModelSpec(name="mlp"),
                               spec)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, out = _run(capsys, "eval", folder, "--data", "digits")
    assert code == 2 and "model.safetensors" in out.err and len(out.err.strip().splitlines()) == 1
    torch.manual_seed(0)


def test_debug_shows_traceback(tmp_path, capsys):
    code, out = _run(capsys, "--debug", "distill", _config(tmp_path), "train.epohcs=3")
    assert code == 2 and "Traceback" in out.err


def test_python_dash_m_works_like_the_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdforge", "distill", str(_config(tmp_path)), "optim.name=adm"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: optim.name")


def _one_line_error(out) -> str:
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.err, out.err
    return lines[0]


def test_a_refused_rerun_changes_nothing_in_the_earlier_run(tmp_path, capsys, teacher_store):
    from support import tree_digest

    run_dir = tmp_path / "run"
    cfg = _config(tmp_path)
    args = ["distill", cfg, f"output_dir={run_dir}", "train.epochs=1", f"teacher.store_dir={teacher_store}",
            "teacher.recipe.train.epochs=1"]
    assert _run(capsys, *args)[0] == 0
    before = tree_digest(run_dir)
    code, out = _run(capsys, *args, "train.epochs=2")  # another config into the same folder: refused
    assert code == 2 and "already holds checkpoints" in _one_line_error(out)
    assert tree_digest(run_dir) == before  # config.yaml included


@pytest.mark.parametrize("template,needle", [
    ("runs/{nme}", "unknown field {nme}"), ("runs/{name", "not a valid folder template"),
    ("runs/{name.__class__}", "unknown field {name.__class__}"), ("runs/{seed[0]}", "unknown field {seed[0]}"),
])
def test_output_dir_templates_fill_only_name_and_seed(tmp_path, capsys, template, needle):
    code, out = _run(capsys, "distill", _config(tmp_path), f"output_dir={template}")
    assert code == 2 and needle in _one_line_error(out)


def test_compare_refuses_to_replace_an_earlier_comparison(tmp_path, capsys, teacher_store):
    from support import tree_digest

    args = ["compare", _config(tmp_path), "--seeds", "1", "--methods", "ce", "--out", tmp_path / "cmp",
            "train.epochs=1", f"teacher.store_dir={teacher_store}", "teacher.recipe.train.epochs=1"]
    assert _run(capsys, *args)[0] == 0
    before = tree_digest(tmp_path / "cmp")
    code, out = _run(capsys, *args)
    assert code == 2 and "--overwrite" in _one_line_error(out) and tree_digest(tmp_path / "cmp") == before
    code, out = _run(capsys, "compare", _config(tmp_path), "--methods", ",")
    assert code == 2 and "--methods names no method" in _one_line_error(out)
