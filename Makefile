# The README's two commands. Both start with the idempotent set-up (seconds when cached).
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

MACHINE := $(shell uname -m)-$(shell nproc)cpu

.PHONY: bootstrap demo test test-fast baseline clean-results

bootstrap:
	LBBENCH_VENV=$(abspath $(VENV)) bash tools/bootstrap.sh

demo: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	$(BIN)/lbbench run suites/demo.yaml
	@echo "HTML report: $(abspath results/demo/report.html)"

test: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	$(BIN)/python -m pytest -ra

# Unit tests only (no multi-process runs); for quick iterations.
test-fast:
	$(BIN)/python -m pytest -ra -m "not slow"

# Refresh the CI regression baseline of this machine class (deliberately; see README).
baseline: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	rm -rf results/ci
	$(BIN)/lbbench run suites/ci.yaml --results results
	$(BIN)/lbbench baseline results/ci --out results/baselines/ci-$(MACHINE).json --machine $(MACHINE)

clean-results:
	rm -rf results/demo results/tests
