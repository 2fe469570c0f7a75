# Two commands: `make run` serves the platform, `make test` runs the whole suite.
# Both create .venv, install requirements.txt, apply migrations and seed the demo first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?= -q

.PHONY: run test install migrate seed bench clean

run: seed
	$(PY) -m openplatform serve

test: seed
	@echo "== test suite on the embedded backends (SQLite + in-process cache)"
	env -u EHC_TEST_DATABASE_URL -u EHC_TEST_REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)
	@if [ -n "$$EHC_TEST_DATABASE_URL" ]; then \
		echo "== test suite on PostgreSQL + Redis"; \
		$(PY) -m pytest $(PYTEST_ARGS); \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(INSTALLED)

# The compiled hot path of dynamic codes; without a C compiler the pure-Python one runs.
install: $(INSTALLED)
	@$(PY) -m cardcore._codec_build

migrate: install
	$(PY) -m openplatform migrate

seed: migrate
	$(PY) -m openplatform seed-demo

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis cardcore/_codec.*.so
