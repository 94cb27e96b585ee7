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
# Empty = the quick CPU training defaults; PRESET=converged trains until validation stalls.
PRESET ?=
# Empty = no overrides; a Dagster run config YAML (the launchpad's format) laid over the preset.
CONFIG ?=
# Empty = every asset; e.g. SELECT="blend_model model_evaluation published_index" re-runs only those.
SELECT ?=
# The recommendation service's port (make serve); it binds 127.0.0.1 (see README, Serving).
PORT ?= 8000

.PHONY: install prepare run backfill dev serve test test-all lint benchmark clean

# llama-cpp-python compiles from source. A native build (-march=native) on a CPU that reports AMX runs
# llama.cpp's AMX kernels, and on these VMs the AMX instructions fault (SIGILL on the first prompt), so
# it is built for AVX2 instead, once per version, into a wheel folder outside the project (pip's own
# wheel cache cannot tell builds with different flags apart), and installed from there.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_CPP_WHEELS ?= $(HOME)/.cache/llmrec/llama-cpp-python-$(LLAMA_CPP_VERSION)-avx2

$(LLAMA_CPP_WHEELS)/.built:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -w $(LLAMA_CPP_WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	@touch $@

# Install into the virtual environment once, and again whenever pyproject.toml or the llama.cpp build changes.
$(BIN)/.installed: pyproject.toml $(LLAMA_CPP_WHEELS)/.built
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-deps --force-reinstall $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install --quiet --find-links $(LLAMA_CPP_WHEELS) -e '.[dev]'
	@touch $@

# The browser tests (tests/browser) drive Debian's chromium: Playwright's own browser download needs the
# internet. Installed only when missing; sudo only when not already root.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

install: $(BIN)/.installed $(CHROMIUM)

# The dbt manifest Dagster loads (dbt parse; `dagster dev` also rebuilds it on load).
prepare: install
	cd transforms && ../$(BIN)/dbt parse --quiet --profiles-dir .

# Main job: materialize the whole asset graph for one dataset and print where the results are.
run: prepare
	$(BIN)/python -m orchestration.cli run $(if $(DATASET),--dataset $(DATASET)) $(if $(PRESET),--preset $(PRESET)) $(if $(QUICK),--quick-assets $(QUICK)) $(if $(SELECT),--select $(SELECT)) $(if $(CONFIG),--config $(CONFIG))

# Backfill: the whole graph for every registered dataset, one partition after another.
backfill: prepare
	$(BIN)/python -m orchestration.cli backfill $(if $(PRESET),--preset $(PRESET)) $(if $(CONFIG),--config $(CONFIG))

# The Dagster UI (webserver + daemon for schedules, sensors and backfills) on http://127.0.0.1:3000.
dev: prepare
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The HTTP recommendation service and its page on http://127.0.0.1:$(PORT), over the published indexes.
serve: install
	$(BIN)/python -m serving --port $(PORT)

# The default tier: unit, dbt, data-quality, definitions, blocking checks, the service, and a smoke run of the
# whole graph at tiny budgets (pyproject.toml deselects the slow, llm and browser markers).
test: prepare
	$(BIN)/python -m pytest

# Every tier: adds the movielens quality gate, the amazon-beauty acceptance run, the LLM tests and the browser
# tests (what CI runs); the 25 slowest tests are listed at the end, so a CI log shows where its time went.
test-all: prepare
	$(BIN)/python -m pytest -m "" --durations=25

lint: install
	$(BIN)/ruff check .

benchmark: prepare
	$(BIN)/python -m benchmarks.data_layer_benchmark

clean:
	rm -rf data/warehouse transforms/target transforms/logs
