# The two commands a new user needs: `make run` and `make test`.
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)  ## create .venv, install the pinned requirements, write the local .env (idempotent)
	@$(PY) -m tradingportal.runner --write-env

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip check
	touch $(STAMP)

run: install  ## migrate, ensure the admin login, start web + feed + worker (Ctrl-C stops)
	$(PY) -m tradingportal.runner

# Test processes run side by side (pytest-xdist); 0 runs every test in the one pytest process.
PYTEST_WORKERS ?= 4

test: install  ## lint, then the whole suite (PostgreSQL + Redis when DATABASE_URL/REDIS_URL are set)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: install  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install  ## benchmarks in bench/ (print ratios against in-run baselines)
	@set -e; for f in bench/*.py; do echo "== $$f"; $(PY) $$f; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache var
