# `make demo` and `make test` set up (or update) the local virtual environment by themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What is installed: the demo needs the [demo] extra (digits, plots), the tests and benchmarks every extra ([dev]).
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP  := $(VENV)/.installed-dev

.PHONY: demo test test-fast bench bench-epoch bench-run results clean

# $(call install,EXTRA): the venv, torch's CPU wheel first (constraints.txt pins it), then kdforge with EXTRA.
define install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[$(1)]'
endef

$(DEMO_STAMP): pyproject.toml constraints.txt
	$(call install,demo)
	touch $(DEMO_STAMP)

$(DEV_STAMP): pyproject.toml constraints.txt
	$(call install,dev)
	touch $(DEV_STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/kdforge demo

# Two pytest-xdist workers, one per core, each taking whole files (--dist loadfile: a file's module fixtures, such
# as a trained teacher, are built once); the suite sets one torch thread per worker (tests/conftest.py).
# The slowest 20 tests are listed at the end (docs/benchmarks.md#test-suite).
test: $(DEV_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=20

test-fast: $(DEV_STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

# Both write their own section of docs/benchmarks.md; each takes a few minutes on 2 CPU cores.
bench: bench-epoch bench-run

bench-epoch: $(DEV_STAMP)
	$(PY) bench/epoch_overhead.py

bench-run: $(DEV_STAMP)
	$(PY) bench/run_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
