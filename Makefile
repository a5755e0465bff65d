# scoresde: `make test` and `make reproduce` work on a fresh clone (they create .venv when missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast test-slurm lint reproduce bench dag clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/python -m pytest -n 2 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" tests

test-slurm: $(STAMP)
	bash scripts/test_slurm.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

reproduce: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores all

bench: $(STAMP)
	$(BIN)/pip install -q -r benchmarks/requirements.txt
	$(BIN)/pip install -q --no-deps -r benchmarks/requirements-nodeps.txt
	$(BIN)/python benchmarks/run_all.py

dag: $(STAMP)  # the rule graph of the default configuration, embedded in README.md
	mkdir -p docs
	$(BIN)/snakemake --rulegraph --quiet all | dot -Tsvg > docs/dag.svg

clean:
	rm -rf data checkpoints samples metrics reports logs .snakemake
