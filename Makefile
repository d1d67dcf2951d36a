# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.dagster_home
SIZE ?= small

.PHONY: demo test ui bench install clean validate

install: $(VENV)/.installed $(DAGSTER_HOME)/dagster.yaml

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install  ## generate the demo data and materialize the whole graph for the demo range
	$(PY) -m feature_assets.demo

test: install  ## run the test suite
	$(PY) -m pytest -q

ui: install  ## Dagster UI on http://127.0.0.1:3000 with persistent history
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

validate: install
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

bench: install  ## benchmarks (SIZE=large for 10M+ events)
	$(PY) -m bench --size $(SIZE)

clean:
	rm -rf data .dagster_home
