# Two commands on a fresh machine with Python 3.11+ and make:
#   make demo   set everything up and run it (web, worker, beat, embedded PostgreSQL and Redis)
#   make test   install what is missing and run the whole suite
# and for the inner loop: make test-fast (no studies, no browser), make lint (ruff, mypy, import contracts)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast lint format stop services bench clean-var

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[ml,dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) manage.py demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not study and not browser" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

services: $(STAMP)
	$(PY) -m config.embedded start

stop:
	@test -x $(PY) && $(PY) -m config.embedded stop || true

bench: $(STAMP)
	$(PY) bench/annotate_load.py
	$(PY) bench/export.py
	$(PY) bench/stats.py
	$(PY) bench/reward.py
	$(PY) bench/flow.py
	$(PY) bench/guidance.py
	$(PY) bench/soak.py

clean-var: stop
	rm -rf var
