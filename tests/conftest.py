"""Puts tests/ on sys.path (pytest inserts a conftest's folder) so every test can import `support`; keeps the
caches that runs write ($KDFORGE_CACHE: teacher logits, decoded data) inside the session's temporary folder; and
shares across the suite what many tests build the same way: the digits data and a store of teachers trained from
recipes (a teacher is keyed by everything that determines its weights, so tests with the same teacher config
train it once per session; a test that counts the teachers it trains keeps its own store).

One torch thread per test process unless the environment says otherwise: the suite's models are small, so a
second thread buys little and contends with the other worker (`make test` runs two, pytest-xdist `-n 2`); the
variable is set before torch is imported, so subprocesses a test starts (the CLI, torchrun) use the same count
and compare bit for bit with in-process runs.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    if "KDFORGE_CACHE" not in os.environ:
        os.environ["KDFORGE_CACHE"] = str(tmp_path_factory.mktemp("kdforge-cache"))
    yield


@pytest.fixture(scope="session")
def teacher_store(tmp_path_factory):
    """A teacher store shared by the session (`teacher.store_dir=...`)."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as `data: {name: digits}` builds them (train / val 10 % / test); shared, not to be
    modified in place."""
    from kdforge.api import build_data
    from kdforge.config.schema import DataConfig

    return build_data(DataConfig(name="digits"))
