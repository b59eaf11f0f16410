"""Bit-identity across refactors: every method, trained a few steps, reproduces the weights recorded in
tests/golden/method_weights.json (generated on the code before the change; see tests/golden/method_weights.py).

A failure means a change moved the numbers of that case: the student's weights, the method's trainable weights
(connectors, its own parameters), or the teacher trained from its recipe (whose folder name, `api.teacher_dir`'s
hash, is checked too: existing teachers must stay where they are). If the change is meant to move them, say which
and why in its commit and regenerate: `PYTHONPATH=src python tests/golden/method_weights.py CASE ...`.
"""
from __future__ import annotations

import json

import pytest

from golden.method_weights import GOLDEN, SLOW_S, run_case
from support import SHARED

ENTRIES = json.loads(GOLDEN.read_text())
NEEDS_FILES = {"cora"}


def _param(name: str, entry: dict) -> object:
    marks = [pytest.mark.slow] if entry["seconds"] > SLOW_S else []
    return pytest.param(name, entry, id=name, marks=marks)


@pytest.mark.parametrize("name, entry", [_param(n, e) for n, e in ENTRIES.items()])
def test_weights_are_bit_identical(name, entry, tmp_path, monkeypatch):
    if entry.get("resolved", {}).get("data", {}).get("name") in NEEDS_FILES and not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path / "cache"))  # nothing reused from another test
    assert run_case(name, entry, tmp_path) == entry["digests"]
