# The two commands a new user needs; both install whatever is missing first.
#   make run    start the gateway with examples/gateway.toml on the embedded SQLite ledger
#   make test   the whole suite, SIPp integration and PostgreSQL included
VENV ?= .venv
CONFIG ?= examples/gateway.toml
PYTEST_ARGS ?=

.PHONY: run test test-fast setup setup-test bench clean

run: setup
	$(VENV)/bin/dialout-gw run --config $(CONFIG)

test: setup-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The unit tests only (no SIPp, no PostgreSQL): about 20 s, for the edit-test loop.
test-fast: setup-test
	$(VENV)/bin/python -m pytest -q -m "not integration and not postgres" $(PYTEST_ARGS)

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

bench: setup-test
	$(VENV)/bin/python bench/policy_bench.py
	$(VENV)/bin/python bench/gateway_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
