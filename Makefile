# The README's two commands. Both start with the idempotent set-up (seconds when cached).
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: bootstrap demo test test-fast clean-results

bootstrap:
	LBBENCH_VENV=$(abspath $(VENV)) bash tools/bootstrap.sh

demo: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	$(BIN)/lbbench run suites/demo.yaml

test: bootstrap
	$(BIN)/lbbench data digits --out data/digits
	$(BIN)/python -m pytest -ra

# Unit tests only (no multi-process runs); for quick iterations.
test-fast:
	$(BIN)/python -m pytest -ra -m "not slow"

clean-results:
	rm -rf results/demo results/tests
