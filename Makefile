# Keystone: `make run` starts everything; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test unit integration browser bench clean-sandbox

$(STAMP): pyproject.toml
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: migrate, then web (gunicorn gthread) + RQ worker + embedded Redis; Ctrl-C stops all
run: install
	$(BIN)/keystone db upgrade
	$(BIN)/keystone dev

## make test: the whole suite (installs and starts PostgreSQL, Docker, chromium as needed)
test: install
	scripts/ensure-postgres.sh >/dev/null
	scripts/ensure-docker.sh
	scripts/ensure-browser.sh
	$(BIN)/pytest -q -p no:cacheprovider

## make unit: the fast tier (no Docker, no browser)
unit: install
	$(BIN)/pytest -q -p no:cacheprovider tests/unit tests/web tests/db tests/security

integration: install
	scripts/ensure-docker.sh
	$(BIN)/pytest -q -p no:cacheprovider tests/integration

browser: install
	scripts/ensure-browser.sh
	$(BIN)/pytest -q -p no:cacheprovider tests/browser
