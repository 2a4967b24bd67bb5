# meter: `make run` starts the service on a fresh machine, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install proto contract run test lint bench migrate audit clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

proto: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

run: $(STAMP)
	$(BIN)/meter serve

bench: $(STAMP)
	$(BIN)/meter bench $(BENCH_ARGS)

migrate: $(STAMP)
	$(BIN)/meter migrate

audit: $(STAMP)
	$(BIN)/meter audit

# buf lint on protos/ and buf breaking against the previous commit (scripts/check_contract.sh).
contract:
	scripts/check_contract.sh

lint: $(STAMP) contract
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/sqlfluff lint src/meter/storage/sql
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .meter .meter-bench bench-results .pytest_cache build src/*.egg-info tools/buf/node_modules examples/node-proxy/node_modules
