# Two set-up commands do everything on a bare machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first, so the package's torch>=2.2 range is already satisfied.
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.2"
	$(PY) -m pip install -q -e ".[dev,serve,export,tune]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modalrec demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
