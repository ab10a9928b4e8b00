# The README's two commands, plus set-up, lint and the deliberate baseline refresh. Every target
# that needs the environment starts with the idempotent set-up (seconds when cached).
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

MACHINE := $(shell uname -m)-$(shell nproc)cpu

.PHONY: bootstrap demo test test-fast lint format baseline clean-results

bootstrap:
	LBBENCH_VENV=$(abspath $(VENV)) bash tools/bootstrap.sh

demo: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	$(BIN)/lbbench run suites/demo.yaml
	@echo "HTML report: $(abspath results/demo/report.html)"

test: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	$(BIN)/python -m pytest

# Unit tests only: no Horovod, no multi-process runs (seconds; for quick iterations).
test-fast: bootstrap
	$(BIN)/python -m pytest -m "not slow and not gpu"

# Lint, format check and type check (CI runs this before the tests).
lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: bootstrap
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Refresh the CI regression baseline of this machine class (deliberately; see README).
baseline: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	rm -rf results/ci
	$(BIN)/lbbench run suites/ci.yaml --results results
	$(BIN)/lbbench baseline results/ci --out results/baselines/ci-$(MACHINE).json --machine $(MACHINE)

clean-results:
	rm -rf results/demo results/tests
