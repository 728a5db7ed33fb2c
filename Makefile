# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need; `make test` also installs the
# Debian packages and npm packages the test suite drives (run as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-deps system-deps services venv venv-test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

venv-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

system-deps:
	scripts/install-system-deps.sh

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

services:
	scripts/start-services.sh

test-deps: system-deps venv-test node_modules/.installed services

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) node_modules demo
