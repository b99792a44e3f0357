# The two quick-start commands: `make sample` (main job) and `make test` (tests + lint).
# Each creates the virtual environment on first use. torch is pinned here to the CPU build
# that these machines carry; the package itself asks for torch>=2.1.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

.PHONY: install sample test lint pytest
install: $(BIN)/.installed

sample: $(BIN)/.installed
	$(BIN)/dpmsolver sample --steps 10 --n 64 --out out/digits.png

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests tools examples benchmarks
	$(BIN)/ruff format --check src tests tools examples benchmarks
	$(BIN)/mypy

pytest: $(BIN)/.installed
	$(BIN)/python -m pytest -q

test: lint pytest
