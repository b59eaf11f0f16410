"""End to end: workers sharing one Optuna storage (SQLite always; PostgreSQL when its server binaries are here),
a worker killed mid-trial, the found distiller run by `kdforge distill`, and `kdforge search report`."""
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from throwaway_pg import local_postgres, unavailable  # tests/throwaway_pg.py

from kdforge.api import run
from kdforge.cli import main
from kdforge.api import load_config
from kdforge.search.runner import search
from kdforge.search.space import load_search_config

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _trials(path, url=None):
    cfg, _ = load_search_config(path)
    return optuna.load_study(study_name=cfg.name, storage=url or cfg.storage_url).get_trials()


def _check_budget_used_once(trials, budget):
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == budget
    trained = [t.user_attrs["key"] for t in finished if "duplicate_of" not in t.user_attrs
               and t.user_attrs.get("rejected", "").split(":")[0] != "invalid"]
    assert not [k for k, n in Counter(trained).items() if n > 1], "a program was trained twice"
    return finished


def _two_workers(path, url=None):
    search(path, workers=2, storage_url=url)
    trials = _trials(path, url)
    finished = _check_budget_used_once(trials, 8)
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in finished if "worker" in t.user_attrs}
    assert workers == {"w0", "w1"}  # both processes evaluated candidates
    assert any(t.state == TrialState.COMPLETE for t in finished)
    return trials


@pytest.mark.slow
def test_two_workers_on_sqlite_then_the_found_distiller_runs_with_distill(search_config, tmp_path, capsys):
    path = search_config()
    _two_workers(path)
    out = tmp_path / "out"
    assert (out / "best.yaml").exists() and (out / "search.db").exists()
    cfg = load_config(out / "distill.yaml", ["train.epochs=1", f"output_dir={tmp_path / 'distilled'}"])
    assert cfg.method.name == "kdzero"
    summary = run(cfg)
    assert 0 <= summary["test"]["top1"] <= 1
    # resuming a finished search evaluates nothing more
    before = len(_trials(path))
    search(path)
    assert len(_trials(path)) == before
    assert main(["search", "report", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "| 1 |" in shown and "8/8 evaluated" in shown
    assert (out / "fitness_by_generation.png").stat().st_size > 0 and (out / "report.md").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_nothing_and_trains_nothing_twice(search_config, tmp_path):
    # long enough proxies to kill one between two checkpoints
    path = search_config(proxy={"epochs": 40}, evolution={"trials": 3})
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kdforge", "search", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpts = tmp_path / "out" / "trials" / "00000" / "checkpoints"
    while time.time() < deadline and not (ckpts.is_dir() and len(list(ckpts.iterdir())) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpts.is_dir(), "the worker never reached a checkpoint"
    search(path)  # the restarted search fails the dead trial after its grace period and retries it
    trials = _trials(path)
    _check_budget_used_once(trials, 3)
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in killed] == [0]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].params == killed[0].params
    if retry[0].state == TrialState.COMPLETE:  # it resumed the killed trial's checkpoint instead of starting over
        assert retry[0].user_attrs["resumed_from_epoch"] is not None


@pytest.fixture
def postgres():
    why = unavailable()
    if why:
        pytest.skip(why)
    with local_postgres() as url:
        yield url


@pytest.mark.slow
def test_two_workers_on_postgresql(search_config, postgres):
    trials = _two_workers(search_config(name="pg"), postgres)
    assert all(t.user_attrs.get("program") for t in trials if t.state == TrialState.COMPLETE)
