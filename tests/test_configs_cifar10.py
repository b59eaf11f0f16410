"""The CIFAR-10 example configs run end to end on a sliver of their data (config_slivers.py): a file of their own,
since they cost about as much as all the other configs together (ResNets, one CIFAR-10 decode per worker) and
`--dist loadfile` gives a file to one worker."""
import pytest

from config_slivers import CIFAR10, run_on_a_sliver


@pytest.mark.slow
@pytest.mark.parametrize("path", CIFAR10, ids=lambda p: p.stem)
def test_config_runs_on_a_sliver(path, tmp_path, monkeypatch, teacher_store):
    run_on_a_sliver(path, tmp_path, monkeypatch, teacher_store)
