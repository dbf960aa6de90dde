# The two commands of the README. Each bootstraps its own virtual environment.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run the product on the embedded SQLite default: the MCP server over HTTP at
## http://127.0.0.1:8765/mcp with its worker (ARGS="serve" for stdio, or any subcommand)
ARGS ?= serve --http
run: $(STAMP)
	$(VENV)/bin/agent-tools $(ARGS)

## run the whole test suite (lint, type check, tests)
test: $(STAMP)
	$(VENV)/bin/ruff check promises agent_tools tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## print the benchmarks' figures as JSON (installs the bench-only extra: DBOS)
bench: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,bench]'
	$(VENV)/bin/python bench/store.py
	$(VENV)/bin/python bench/jobs.py
	$(VENV)/bin/python bench/wake.py
	$(VENV)/bin/python bench/mcp.py
	$(VENV)/bin/python bench/proxy.py
