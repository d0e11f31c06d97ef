# The two commands: `make run` sets up and starts varsel; `make test` sets up and runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# `make run` installs what running needs and no more: the dev extra (pytest, ruff, mypy, schemathesis, playwright)
# is `make test`'s. A stamp of its own, so that `make test` after it still installs the dev extra.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/varsel serve

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 -p xdist

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# `make bench`: every benchmark on SQLite and PostgreSQL (see docs/benchmarks.md); narrow it with ARGS, e.g.
# make bench ARGS="--only intake --db sqlite --quick"
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

.PHONY: bench
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

# `make docs`: the documentation site (docs/, mkdocs.yml) built into build/site/ with --strict, so a broken link, a page
# missing from the navigation or an undescribed setting fails the build (see docs/index.md).
DOCS_STAMP := $(VENV)/.docs-installed

# The hook imports varsel's settings model: varsel and what running needs, not the dev extra.
$(DOCS_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

.PHONY: docs
docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict
