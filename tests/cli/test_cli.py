"""The CLI's contract on bad input: one readable line on stderr, exit code 2, no traceback."""
import subprocess
import sys

import pytest
import yaml

from kdforge.cli import main
from kdforge.demo import preset


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
    from kdforge.config.schema import ModelConfig
    from kdforge.data import build
    from kdforge.config.schema import DataConfig

    spec = build(DataConfig(name="digits")).spec
    folder = models.save_model(tmp_path / "m", models.build(ModelConfig(name="mlp"), spec), ModelConfig(name="mlp"),
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
    proc = subprocess.run([sys.executable, "-m", "kdforge", "distill", str(_config(tmp_path)), "optim.name=adam"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: optim.name")
