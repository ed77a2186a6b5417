# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# pytest-xdist workers: most tests wait on real processes and fakes, so two halve the time.
PYTEST_WORKERS ?= 2

.PHONY: run test lint bench clean

# What runs: the runtime dependencies only (`make run`).
$(STAMP): pyproject.toml
	@echo "installing MirrorOS (about a minute on first run)…"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

# What tests, lints and benchmarks need on top (`make test`, `make lint`, `make bench`).
$(DEV_STAMP): $(STAMP)
	@echo "installing the test tools (pytest, ruff, mypy, …)"
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(DEV_STAMP)

run: $(STAMP)
	@$(BIN)/mirror up

lint: $(DEV_STAMP)
	$(BIN)/ruff check bot adapters tests bench
	$(BIN)/mypy

test: $(DEV_STAMP) lint
	scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); status=$$?; \
		if [ $$status -eq 5 ]; then echo 'no tests collected'; exit 0; fi; exit $$status

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
