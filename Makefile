# aimms-ops: `make demo` sets everything up and runs the main job against the sandbox
# host; `make test` runs the whole suite (it brings the sandbox up itself).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SANDBOX_INV := sandbox/inventory.yml
FAB := AIMMS_OPS_INVENTORY=$(SANDBOX_INV) $(BIN)/fab

.PHONY: venv sandbox sandbox-down sandbox-regression demo test unit lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

sandbox: venv
	bash sandbox/up.sh

sandbox-down:
	bash sandbox/down.sh

# PostgreSQL's regression database in the sandbox cluster (cached; tests/clusters.py).
sandbox-regression: sandbox
	bash sandbox/regression.sh

demo: venv sandbox
	$(FAB) install-backups
	$(FAB) check
	$(FAB) backup
	$(FAB) list-backups
	$(FAB) status

# The host program's packages must run on the host's python3 (aimms_ops.core.HOST_PYTHON).
HOST_PYTHON := 3.7
lint: venv
	$(BIN)/ruff check aimms_ops tests fabfile.py $(wildcard bench)
	$(BIN)/mypy aimms_ops
	$(BIN)/vermin -q -t=$(HOST_PYTHON)- --no-tips --violations aimms_ops/core aimms_ops/dump aimms_ops/agent
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q -n $(TEST_JOBS) -m "not integration"

# The whole suite, in TEST_JOBS workers (each integration file in one worker, the unit
# tests spread over both: tests/conftest.py; worker N > 0 against its own sandbox
# instance NAME-N, tests/sandbox_client.py); the 25 slowest tests are listed at the
# end, to keep it in check.
# The sandbox comes up first: the unit tests of the host's tools (zstd, pigz, shellcheck)
# need what it installs on this machine.
TEST_JOBS ?= 2
test: venv lint sandbox
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadgroup --durations=25

bench: venv sandbox
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
