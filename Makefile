# Everything runs from a project virtualenv made with pip (torch is pinned to the CPU
# build that pip finds locally; see pyproject.toml).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install chromium demo test test-fast faults lint fmt bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Headless Chromium (Debian), which the report test renders pages with.
chromium:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium; }

## The main job: a short self-improvement run on the embedded model, offline.
demo: install
	$(BIN)/sia --workspace sia-workspace run --task arith --mode h --iterations 3 --batch-size 8
	$(BIN)/sia --workspace sia-workspace status

## The full test suite, slow real-model tests included (what CI runs).
test: install chromium
	$(BIN)/python -m pytest

## Everything but the tests marked slow.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

## The fault suite alone: injects every fault of tests/faults/ and prints what was contained.
faults: install
	$(BIN)/python -m pytest tests/faults

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/train.py

clean:
	rm -rf $(VENV) sia-workspace .pytest_cache
