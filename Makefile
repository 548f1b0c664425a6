# Two entry points for a fresh clone: `make demo` and `make test`.
# Both create .venv and install the project (with pinned torch/torchvision) when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test lint clean-results bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	# one BLAS/OpenMP thread per process: the suite runs many small torch jobs side by side, and
	# 2 cores oversubscribed by torch's default threads made it 1.7x slower (983 s vs 587 s)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean-results:
	rm -rf results logs .snakemake
