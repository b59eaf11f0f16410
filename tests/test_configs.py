"""Every shipped example config validates, and runs end to end on a sliver of its data (the CIFAR-10 configs in
test_configs_cifar10.py)."""
import pytest

from config_slivers import CIFAR10, CONFIGS, NO_FILES_IN_SNAPSHOT, run_on_a_sliver
from kdforge.api import load_config


def test_every_data_set_and_method_has_an_example():
    from kdforge.registry import DATASETS, METHODS

    cfgs = [load_config(p) for p in CONFIGS]
    assert {c.data.name for c in cfgs} == set(DATASETS) - NO_FILES_IN_SNAPSHOT - {"imagefolder"}
    assert {c.method.name for c in cfgs} == set(METHODS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.train.epochs >= 1


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in CONFIGS if p not in CIFAR10], ids=lambda p: p.stem)
def test_config_runs_on_a_sliver(path, tmp_path, monkeypatch, teacher_store):
    run_on_a_sliver(path, tmp_path, monkeypatch, teacher_store)
