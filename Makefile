# The two commands a new user needs; both install whatever is missing first.
#   make run    start the gateway with examples/gateway.toml on the embedded SQLite ledger
#   make test   the whole suite, SIPp integration and PostgreSQL included
#   make fuzz   the fuzzers for longer (FUZZ_SECONDS, FUZZ_CASES, FUZZ_SEED; see README "Reliability")
VENV ?= .venv
CONFIG ?= examples/gateway.toml
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 600
FUZZ_CASES ?= 100000
FUZZ_SEED ?= $(shell date +%s)
FUZZ_EXAMPLES ?= 5000
FUZZ_CALL_SECONDS ?= 300
FUZZ_CALL_CASES ?= 50000

.PHONY: run test test-fast check fuzz setup setup-test bench clean

run: setup
	$(VENV)/bin/dialout-gw run --config $(CONFIG)

test: setup-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The unit tests only (no SIPp, no PostgreSQL): about 20 s, for the edit-test loop.
test-fast: setup-test
	$(VENV)/bin/python -m pytest -q -m "not integration and not postgres" $(PYTEST_ARGS)

# Lint and format check (ruff), strict types (mypy) on the files pyproject.toml lists.
check: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The pure parsers with many more Hypothesis examples and radamsa mutations, then
# the running gateway for FUZZ_SECONDS of INVITEs and FUZZ_CALL_SECONDS of trunk
# answers and in-dialog requests (a new seed each run unless FUZZ_SEED is
# given; inputs that crash, hang or make it log an error land in
# tests/data/fuzz/crashers/, which `make test` replays).
fuzz: setup-test
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_MUTATIONS=$$(( $(FUZZ_EXAMPLES) / 2 )) \
	  $(VENV)/bin/python -m pytest tests/sip/test_fuzz_parsers.py -q $(PYTEST_ARGS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) FUZZ_REPORT=$(CURDIR)/var/fuzz-report.json \
	FUZZ_CALL_SECONDS=$(FUZZ_CALL_SECONDS) FUZZ_CALL_CASES=$(FUZZ_CALL_CASES) \
	  $(VENV)/bin/python -m pytest tests/integration/test_fuzz.py -q -s -p no:cacheprovider \
	  -o timeout=$$(( $(FUZZ_SECONDS) + $(FUZZ_CALL_SECONDS) + 300 )) $(PYTEST_ARGS)

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

bench: setup-test
	$(VENV)/bin/python bench/policy_bench.py
	$(VENV)/bin/python bench/gateway_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
