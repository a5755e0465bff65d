# scoresde: `make test` and `make reproduce` work on a fresh clone (they create .venv when missing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast test-slurm lint reproduce bench dag clean chromium fashion-mnist report-shot

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The report's browser test needs a headless chromium: Debian's, installed here when missing and
# root; otherwise that test skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Debian's chromium for the report's browser test"; \
		{ timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
		  apt-get install -y -qq chromium; } >/dev/null 2>&1 || \
		echo "make: could not install chromium; the browser test will skip"; \
	else echo "make: no chromium (installing it needs root and apt-get); the browser test will skip"; fi

# The 28x28 end-to-end test reads the real Fashion-MNIST files of Debian's package
# dataset-fashion-mnist (30 MB): installed here when missing and root; otherwise that test skips.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
fashion-mnist:
	@test -f $(FASHION_MNIST) || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Debian's dataset-fashion-mnist for the 28x28 end-to-end test"; \
		{ timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
		  apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 || \
		echo "make: could not install dataset-fashion-mnist; the 28x28 test will skip"; \
	else echo "make: no dataset-fashion-mnist (installing it needs root and apt-get); the 28x28 test will skip"; fi

test: $(STAMP) chromium fashion-mnist
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

report-shot: $(STAMP) chromium  # docs/report.png from reports/report.html, checked in chromium
	$(BIN)/python -m scoresde.report.browser reports/report.html --screenshot docs/report.png

# Every output of the DAG; never data/raw/, where the raw datasets live.
clean:
	rm -rf data/processed checkpoints samples metrics controllable reports logs .snakemake
