# `make test` and `make demo` do all their own set-up: a virtualenv in .venv with torch pinned through
# constraints.txt (the CPU build on these machines), then this package with its dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: test lint docs demo bench bench-3d install-check clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# The documentation site, strict: a broken link or a public name without a docstring fails it (docs/hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint docs
	$(BIN)/pytest -q

# Build the wheel and sdist, install the wheel into a fresh venv per Python 3.10-3.13 found, run --version,
# the quick start, the fast tests and the extras' resolve check there (noxfile.py); table in dist/install-matrix.md.
# About 11 minutes on 2 cores; Pythons without the CPU torch on disk download torch 2.13.0's CUDA build from PyPI.
install-check: $(STAMP)
	$(PIP) nox
	$(BIN)/nox

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(PIP) -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_augment.py
	$(BIN)/python benchmarks/bench_weight_map.py
	$(BIN)/python benchmarks/bench_metrics.py

# About an hour on 2 cores: two 30-minute trainings (dense and sparse labels) on MSD hippocampus.
bench-3d: $(STAMP)
	$(BIN)/python benchmarks/bench_hippocampus.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo_out bench_out site
