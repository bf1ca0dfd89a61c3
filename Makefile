# firsthop developer entry points. `make setup && make test` is the whole CI run.
#
# Tools run from the project virtual environment ($(VENV)); nothing is installed globally.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamp of the last successful install; redone when pyproject.toml changes.
SETUP_STAMP := $(VENV)/.firsthop-setup

PROTO_DIR := proto
PROTO_SRCS := $(sort $(wildcard $(PROTO_DIR)/firsthop/v1/*.proto))
PROTO_GEN_GLOBS := $(PROTO_DIR)/firsthop/v1/*_pb2.py $(PROTO_DIR)/firsthop/v1/*_pb2.pyi \
	$(PROTO_DIR)/firsthop/v1/*_pb2_grpc.py $(PROTO_DIR)/firsthop/v1/*_pb2_grpc.pyi

# Benchmarks to run: each NAME runs as `python -m bench.NAME` (bench/NAME.py).
BENCHES ?= topology core control_plane submit_path recovery sim
PYTEST_ARGS ?=

.PHONY: help setup proto check-proto lint type test bench demo clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

setup: $(SETUP_STAMP) ## Create the venv if missing and install the project with its dev tools.

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(SETUP_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

proto: setup ## Regenerate the committed protobuf/gRPC code and stubs from proto/.
	rm -f $(PROTO_GEN_GLOBS)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I $(PROTO_DIR) \
		--python_out=$(PROTO_DIR) --grpc_python_out=$(PROTO_DIR) \
		--mypy_out=$(PROTO_DIR) --mypy_grpc_out=$(PROTO_DIR) $(PROTO_SRCS)

check-proto: proto ## Fail if the committed generated code differs from a regeneration.
	git diff --exit-code -- $(PROTO_DIR)/
	@untracked="$$(git ls-files --others --exclude-standard -- $(PROTO_DIR)/)"; \
	if [[ -n "$$untracked" ]]; then \
		echo "check-proto: untracked files under $(PROTO_DIR)/ (commit them):" >&2; \
		echo "$$untracked" >&2; \
		exit 1; \
	fi

lint: setup ## ruff check, ruff format --check, import-linter contracts.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

type: setup ## mypy --strict on first-party packages (see [tool.mypy] in pyproject.toml).
	$(BIN)/mypy

test: setup ## lint, type, check-proto, then pytest (PYTEST_ARGS=... to pass options).
	$(MAKE) lint
	$(MAKE) type
	$(MAKE) check-proto
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup ## Run every benchmark module listed in BENCHES.
	@for name in $(BENCHES); do \
		echo "== bench.$$name"; \
		$(BIN)/python -m bench.$$name; \
	done

demo: setup ## Run the local demo (examples/demo.sh).
	VENV="$(abspath $(VENV))" bash examples/demo.sh

clean: ## Remove caches and build outputs (keeps the venv and the committed generated code).
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
