# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME := $(CURDIR)/.dagster_home
SIZE ?= small

.PHONY: demo test ui bench install clean validate serve stream redis bench-candidates

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

test: install redis  ## run the test suite
	$(PY) -m pytest -q

redis:  ## redis-server for the Redis tests: installed with apt-get when missing and root, else those tests skip
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "note: redis-server missing (apt-get install redis-server); the Redis tests will skip"; fi; }

serve: install  ## feature lookups over HTTP on http://127.0.0.1:8000 (SQLite in the store, or $$REDIS_URL)
	$(PY) -m featurecore.serving_api --host 127.0.0.1 --port 8000

stream: install  ## streaming updater: new event files in the landing zone -> online store (STREAM_ARGS=--once ...)
	$(PY) -m featurecore.streaming_update $(STREAM_ARGS)

ui: install  ## Dagster UI on http://127.0.0.1:3000 with persistent history
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

validate: install
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

bench: install  ## benchmarks (SIZE=large for 10M+ events)
	$(PY) -m bench --size $(SIZE)

bench-candidates: install  ## candidate throughput only: DFS and tsfresh, one process vs 2 workers
	$(PY) -m bench --size $(SIZE) --only candidates

clean:
	rm -rf data .dagster_home
