# `make demo` and `make test` set up (or update) the local virtual environment by themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-epoch bench-run results clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kdforge demo

# Two pytest-xdist workers, one per core, each taking whole files (--dist loadfile: a file's module fixtures, such
# as a trained teacher, are built once); the suite sets one torch thread per worker (tests/conftest.py).
# The slowest 20 tests are listed at the end (docs/benchmarks.md#test-suite).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=20

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

# Both write their own section of docs/benchmarks.md; each takes a few minutes on 2 CPU cores.
bench: bench-epoch bench-run

bench-epoch: $(STAMP)
	$(PY) bench/epoch_overhead.py

bench-run: $(STAMP)
	$(PY) bench/run_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
