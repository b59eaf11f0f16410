"""Puts tests/ on sys.path (pytest inserts a conftest's folder) so every test can import `support`; keeps the
caches that runs write ($KDFORGE_CACHE: teacher logits, decoded data) inside the session's temporary folder."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    if "KDFORGE_CACHE" not in os.environ:
        os.environ["KDFORGE_CACHE"] = str(tmp_path_factory.mktemp("kdforge-cache"))
    yield
