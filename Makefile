# The two quick-start commands: `make sample` (main job) and `make test` (tests + lint).
# Each creates the virtual environment on first use. torch is pinned here to the CPU build
# that these machines carry; the package itself asks for torch>=2.1.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# k-diffusion's sampling.py is the tests' reference; its package imports training code
# (CLIP, kornia, wandb...), so it is installed without dependencies and the tests load its
# sampling module alone (tests/k_reference.py).
KDIFFUSION ?= k-diffusion==0.1.1.post1

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps "$(KDIFFUSION)"
	touch $@

.PHONY: install sample test test-fast lint pytest bench docs
install: $(BIN)/.installed

sample: $(BIN)/.installed
	$(BIN)/dpmsolver sample --steps 10 --n 64 --out out/digits.png

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests tools examples benchmarks
	$(BIN)/ruff format --check src tests tools examples benchmarks
	$(BIN)/mypy

# The fast subset (about a minute): the core's API, options, grids, rules and convergence
# orders, one test file per face (official, diffusers, k-diffusion, ComfyUI with its
# stand-in), the command line's vocabulary and basics, and the layering rules.
FAST_TESTS = tests/test_native_api.py tests/test_options.py tests/test_grids.py \
	tests/test_coefficients.py tests/test_kernel.py tests/test_convergence.py \
	tests/test_compat_api.py tests/test_diffusers.py tests/test_k_diffusion.py \
	tests/test_comfyui.py tests/test_vocabulary.py tests/test_layers.py

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(FAST_TESTS)

pytest: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# The fast subset first, so that a broken core fails in a minute, then everything.
test: lint test-fast pytest

# The documentation site: docs/ -> site/ with MkDocs (strict: a broken link, a missing page
# or an unresolved API reference fails), then tools/check_site.py checks that every public
# name's API entry shows its docstring. SCREENSHOTS=<folder> also renders the home and
# Choosing pages in headless Chromium into that folder (CI keeps them as artefacts).
SCREENSHOTS ?=
$(BIN)/.docs-installed: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $@

docs: $(BIN)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python tools/check_site.py site $(if $(SCREENSHOTS),--screenshots $(SCREENSHOTS))

# Before a release: every benchmark the docs quote, run on this tree, its output kept in
# docs/benchmarks/ and its plots in docs/images/ (each number on the site names its
# script); low_budget.py takes the longest. DIFFUSERS=<diffusers git dir> (and
# TORCHSDE=<folder holding torchsde>) also runs diffusers' own scheduler tests on ours.
DIFFUSERS ?=
TORCHSDE ?=
bench: $(BIN)/.installed
	mkdir -p docs/benchmarks docs/images
	$(BIN)/dpmsolver sample --steps 10 --n 64 --out docs/digits_grid.png
	$(BIN)/dpmsolver bench --model digits-exact --out docs/bench-digits-exact
	$(BIN)/dpmsolver bench --model digits-net --out docs/bench-digits-net
	$(BIN)/python benchmarks/accuracy.py --plot docs/images/accuracy.png \
		> docs/benchmarks/accuracy.txt
	$(BIN)/python benchmarks/diffusers_schedulers.py --plot docs/images/diffusers_schedulers.png \
		> docs/benchmarks/diffusers_schedulers.txt
	$(BIN)/python benchmarks/guidance.py > docs/benchmarks/guidance.txt
	$(BIN)/python benchmarks/inversion.py > docs/benchmarks/inversion.txt
	$(BIN)/python benchmarks/low_budget.py --plot docs/images/low_budget.png \
		> docs/benchmarks/low_budget.txt
	$(BIN)/python benchmarks/coefficient_ceiling.py > docs/benchmarks/coefficient_ceiling.txt
	$(BIN)/python benchmarks/per_sample_ceiling.py > docs/benchmarks/per_sample_ceiling.txt
	$(BIN)/python benchmarks/overhead.py --compile --rounds 45 > docs/benchmarks/overhead.txt
	$(BIN)/python benchmarks/sde.py > docs/benchmarks/sde.txt
	$(BIN)/python examples/trajectories_2d.py --out docs/images/trajectories_2d.png
	$(BIN)/dpmsolver compare --steps 5,10,20 --solvers ddim,dpm++2m,dpm++3m \
		--out docs/images/compare.png
	if [ -n "$(DIFFUSERS)" ]; then $(BIN)/python benchmarks/diffusers_suite.py \
		--diffusers "$(DIFFUSERS)" $(if $(TORCHSDE),--extra-path "$(TORCHSDE)") \
		> docs/benchmarks/diffusers_suite.txt; fi
	if [ -n "$(COMFYUI_DIR)" ]; then COMFYUI_DIR="$(COMFYUI_DIR)" $(BIN)/python \
		benchmarks/comfyui_samplers.py > docs/benchmarks/comfyui_samplers.txt; fi
