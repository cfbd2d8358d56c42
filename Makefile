# The README's commands are the contract: `make test` on a fresh machine installs everything
# it needs (a virtual environment, the Go-built control plane, Prometheus) and runs every test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck unit crds check-crds cluster-tools clean

test: lint typecheck unit

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy api

cluster-tools:
	hack/build-tools

unit: $(STAMP) cluster-tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest

crds: $(STAMP)
	$(BIN)/cutover crds --output crds

clean:
	rm -rf $(VENV) .tools build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
