"""Issue 25's CLI points, each through the real entry point (`python -m kdforge`, or `main` as the console script
calls it): run folders per method, one method syntax and compare --jobs, a method switch by override, search
report by study name, eval of any saved folder, help and global flags, methods/describe, progress in logs, and
analyze's table."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdforge.cli import PROGRESS_EVERY_ENV, main
from kdforge.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def _cli(*argv, cwd=None, env=None):
    """`python -m kdforge ARGV`, as a user runs it (stderr a pipe, not a terminal)."""
    return subprocess.run([sys.executable, "-m", "kdforge", *map(str, argv)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture
def cli(capsys, monkeypatch):
    """`kdforge ARGV` in this process (the console script's `main`): (exit code, stdout, stderr). Cheaper than a new
    interpreter per call; the tests that need a real process (stderr a pipe, worker processes) use `_cli`."""
    monkeypatch.setenv(PROGRESS_EVERY_ENV, "30")  # main sets it; restored after the test

    def run(*argv):
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's --help / --version
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _quick(teacher_store):
    return ["train.epochs=1", f"teacher.store_dir={teacher_store}", "teacher.recipe.train.epochs=1",
            "data.train_subset=300"]


def test_two_methods_and_train_on_one_config_get_their_own_run_folders(tmp_path, teacher_store, cli, monkeypatch):
    quick = [*_quick(teacher_store), "train.progress=false"]
    monkeypatch.chdir(tmp_path)
    for argv in (["distill", CONFIGS / "digits_kd.yaml"], ["distill", CONFIGS / "digits_wsl.yaml"],
                 ["train", CONFIGS / "digits_kd.yaml"]):
        code, _, err = cli(*argv, *quick)
        assert code == 0, err
    name = yaml.safe_load((CONFIGS / "digits_kd.yaml").read_text())["name"]
    assert name == yaml.safe_load((CONFIGS / "digits_wsl.yaml").read_text())["name"]  # the pair shares a name
    for method in ("kd", "wsl", "ce"):
        assert json.loads((tmp_path / "runs" / name / method / "seed0" / "summary.json").read_text())["method"] == method


def test_compare_sweeps_a_param_and_jobs_give_the_same_numbers(tmp_path, teacher_store):
    tables = []
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        proc = _cli("compare", CONFIGS / "digits_kd.yaml", "--methods", "kd:temperature=1,kd:temperature=8",
                    "--seeds", "2", "--jobs", jobs, "--out", out, *_quick(teacher_store))
        assert proc.returncode == 0, proc.stderr
        rows = json.loads((out / "results.json").read_text())["rows"]
        labels = [r["method"] for r in rows if not r["method"].startswith("teacher")]
        assert labels == ["kd T=1", "kd T=8"]  # distinct rows, in the order given
        assert "kd T=1" in proc.stdout and "kd T=8" in proc.stdout
        tables.append({r["method"]: (r["top1"], r["nll"]) for r in rows})
        runs = json.loads((out / "results.json").read_text())["runs"]
        assert [s["seed"] for s in runs["kd T=8"]] == [0, 1]
    assert tables[0] == tables[1]
    assert tables[0]["kd T=1"] != tables[0]["kd T=8"]  # the temperature reached the runs


def test_a_method_switch_by_override_drops_the_old_params_with_a_note(tmp_path, teacher_store, cli):
    code, _, err = cli("distill", CONFIGS / "digits_kd.yaml", "method.name=wsl", "method.params.alpha=1",
                       f"output_dir={tmp_path / 'run'}", "train.progress=false", *_quick(teacher_store))
    assert code == 0, err  # kd_weight, which wsl does not take, is not refused
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "kd_weight are dropped" in notes[0]
    kd = yaml.safe_load((CONFIGS / "digits_kd.yaml").read_text())["method"]["params"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"]
    shared = {k: v for k, v in kd.items() if k != "kd_weight"}  # what wsl also takes is kept
    assert saved["name"] == "wsl" and {k: saved["params"][k] for k in shared} == shared
    assert saved["params"]["alpha"] == 1 and "kd_weight" not in saved["params"]


def test_search_report_reads_a_study_by_name_and_storage(tmp_path):
    from kdforge.search.runner import open_study
    from kdforge.search.space import load_search_config

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "st", "experiment": str(CONFIGS / "digits_kd.yaml"),
                                    "out": str(tmp_path / "out"), "evolution": {"population": 4, "trials": 8}}))
    cfg, _ = load_search_config(path)
    open_study(cfg, cfg.storage_url)  # the study as a search leaves it before its first result
    by_name = _cli("search", "report", "--study", "st", "--storage", cfg.storage_url, "--out", tmp_path / "r")
    assert by_name.returncode == 0, by_name.stderr
    assert "Distiller search 'st'" in by_name.stdout and "0/8 evaluated" in by_name.stdout
    assert (tmp_path / "r" / "report.md").exists()
    other = _cli("search", "report", path, "evolution.population=6")  # not the search's exact overrides
    assert other.returncode == 0 and "Distiller search 'st'" in other.stdout, other.stderr
    missing = _cli("search", "report", "--study", "nope", "--storage", cfg.storage_url)
    assert missing.returncode == 2 and "no study 'nope'" in missing.stderr and "'st'" in missing.stderr


def test_eval_takes_a_run_model_or_checkpoint_folder_without_data(tmp_path, teacher_store, capsys):
    run_dir = tmp_path / "run"
    assert main(["distill", str(CONFIGS / "digits_kd.yaml"), f"output_dir={run_dir}", "train.progress=false",
                 *_quick(teacher_store)]) == 0
    capsys.readouterr()
    checkpoint = sorted((run_dir / "checkpoints").glob("epoch_*"))[-1]
    results = []
    for folder in (run_dir, run_dir / "student", checkpoint, run_dir / "checkpoints"):
        assert main(["eval", str(folder)]) == 0, folder
        results.append(json.loads(capsys.readouterr().out))
    assert all(r == results[0] for r in results)  # the last checkpoint holds the saved student's weights
    summary = json.loads((run_dir / "summary.json").read_text())
    assert results[0]["top1"] == pytest.approx(summary["test"]["top1"])
    assert main(["eval", str(tmp_path)]) == 2
    assert "give a model folder, a run folder or a checkpoint folder" in capsys.readouterr().err


def _actions(parser, path=("kdforge",)):
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):  # subcommands
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        elif action.dest != "help":
            yield " ".join(path), action


def test_every_argument_has_help_and_help_shows_defaults(cli):
    missing = [f"{where} {a.dest}" for where, a in _actions(build_parser()) if not (a.help or "").strip()]
    assert not missing, f"arguments without help text: {missing}"
    code, out, _ = cli("compare", "--help")
    assert code == 0 and "(default: 3)" in out and "--jobs" in out


def test_version_and_global_flags_before_or_after_the_subcommand(tmp_path, cli):
    from kdforge import __version__

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"kdforge {__version__}"
    bad = tmp_path / "exp.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load((CONFIGS / "digits_kd.yaml").read_text())}))
    for argv in (["--debug", "distill", bad, "train.epohcs=3"], ["distill", bad, "train.epohcs=3", "--debug"],
                 ["distill", "--debug", bad, "train.epohcs=3"]):
        code, _, err = cli(*argv)
        assert code == 2 and "Traceback" in err, argv
    code, _, err = cli("distill", bad, "train.epohcs=3")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _names_listed(out: str) -> set[str]:
    """The names in the first column of a `kdforge methods` / `kdforge models` listing (name, 2+ spaces, text)."""
    return {line.split()[0] for line in out.splitlines() if re.match(r"^[a-z_0-9]+\s{2,}\S", line)}


def test_methods_lists_every_method_and_describe_its_params(cli):
    from kdforge.methods import METHODS

    code, out, _ = cli("methods")
    assert code == 0
    listed = _names_listed(out)
    assert listed == set(METHODS)
    assert re.search(r"^kd\s+Hinton et al\. 2015", out, re.M)
    code, out, _ = cli("describe", "kd")
    assert code == 0
    assert "temperature (float, default 4.0)" in out and "softmax temperature" in out
    code, _, err = cli("describe", "kdd")
    assert code == 2 and "did you mean 'kd'" in err


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, teacher_store):
    proc = _cli("--progress-every", "0", "distill", CONFIGS / "digits_kd.yaml", f"output_dir={tmp_path / 'run'}",
                "train.progress=true", *_quick(teacher_store))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if re.search(r": \d+/\d+ steps \(\d+%\)", line)]
    assert len(lines) >= 3 and "/" in lines[-1] and "(100%)" in lines[-1]


def test_analyze_prints_its_summary_table(tmp_path, cli):
    code, out, err = cli("analyze", "linear", "--lambdas", "0,0.5,1", "--batches", "50", "--out", tmp_path / "lin")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| SGD step")]
    report = json.loads((tmp_path / "lin" / "analysis.json").read_text())
    assert len(rows) == len(report["curves"]) >= 2
    first = next(iter(report["curves"].values()))
    assert f"{first['lam_star']:.3f}" in rows[0]


def test_models_lists_every_model_with_its_params(cli):
    from kdforge.models import MODELS

    code, out, _ = cli("models")
    assert code == 0
    listed = _names_listed(out)
    assert listed == set(MODELS)
    assert re.search(r"^cnn\s+.*channels=\(32, 64\).*hidden=128", out, re.M)
