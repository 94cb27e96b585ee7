# The project's entry points; README.md quotes these. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local Dagster instance (run history, schedules, pool limits) and the one warehouse env var.
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export LLMREC_DUCKDB_PATH ?= $(CURDIR)/data/warehouse/llmrec.duckdb
export DAGSTER_DISABLE_TELEMETRY ?= 1
# dagster-dbt finds `dbt` on PATH (e.g. when `dagster dev` rebuilds the manifest): the venv's comes first.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK ?= 1
# Empty = the registry's default dataset (amazon-beauty).
DATASET ?=

.PHONY: install prepare run backfill dev test lint benchmark clean

# Install into the virtual environment once, and again whenever pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

# The dbt manifest Dagster loads (dbt parse; `dagster dev` also rebuilds it on load).
prepare: install
	cd transforms && ../$(BIN)/dbt parse --quiet --profiles-dir .

# Main job: materialize the whole asset graph for one dataset and print where the results are.
run: prepare
	$(BIN)/python -m orchestration.cli run $(if $(DATASET),--dataset $(DATASET))

# Backfill: the whole graph for every registered dataset, one partition after another.
backfill: prepare
	$(BIN)/python -m orchestration.cli backfill

# The Dagster UI (webserver + daemon for schedules, sensors and backfills) on http://127.0.0.1:3000.
dev: prepare
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

test: prepare
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

benchmark: prepare
	$(BIN)/python -m benchmarks.data_layer_benchmark

clean:
	rm -rf data/warehouse transforms/target transforms/logs
