# One interface for humans and CI. Every target creates or reuses .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch first, pinned: here 2.13.0 is a local CPU wheel, while a bare `torch` pulls CUDA packages.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-all lint fmt type docs bench reproduce mutants mutants-sample ci clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dcgmm demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports  # the dependency rule of docs/architecture.md (pyproject.toml)

fmt: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

type: $(STAMP)
	$(VENV)/bin/mypy

# The documentation site (docs/, Sphinx; docs/getting_started.md says why): the API and CLI
# references generated from the code, the gallery docs/examples/plot_*.py executed with one
# torch thread (a few minutes). Always from scratch: Sphinx reports the warnings of the pages
# it rereads only, and -W turns each into a failure, as is an example that raises.
# The site is docs/_build/html (python -m http.server -d docs/_build/html).
DOCS_GENERATED := docs/_build docs/_generated docs/auto_examples docs/sg_execution_times.rst
docs: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,docs]'
	rm -rf $(DOCS_GENERATED)
	OMP_NUM_THREADS=1 $(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.bench

# The papers' tables on ../shared/data (hours on 2 CPU cores; trained models are cached in
# runs/reproduce). One table: python -m benchmarks.reproduce table1|table3|table4|flatgmm
reproduce: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.reproduce all

# Mutation testing of the core and generation modules ([tool.mutmut] in pyproject.toml; cost and
# results in docs/mutation.md). Hours on 2 cores, so not part of `make test`. MUTANT_JOBS workers,
# one thread each; `mutmut browse` or `mutmut show NAME` in this folder afterwards.
MUTANT_JOBS ?= 2
mutants: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,mutation]'
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTANT_JOBS)
	$(PY) tools/mutation_report.py mutants --out docs/mutation/full.json

# The same on a seeded uniform sample of MUTANT_SAMPLE mutants (tens of minutes instead of hours;
# docs/mutation.md): generate every mutant, test only the sample, score the sample. The first
# mutmut call names no mutant: it generates them all and collects the test statistics, then
# stops with "nothing matches" (hence || true; the sampler fails if nothing was generated).
MUTANT_SAMPLE ?= 200
mutants-sample: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,mutation]'
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTANT_JOBS) generate.only || true
	$(PY) tools/mutation_sample.py mutants --n $(MUTANT_SAMPLE) > mutants/sample.txt
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $(MUTANT_JOBS) $$(cat mutants/sample.txt)
	$(PY) tools/mutation_report.py mutants --sample mutants/sample.txt --out docs/mutation/sample.json

ci: lint type test-all

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache mutants $(DOCS_GENERATED)
