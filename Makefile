# Keystone: `make run` starts everything; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The fast tiers run in parallel (pytest-xdist); the sandbox tiers share one sandbox, in order.
FAST_TIERS := tests/unit tests/web tests/db $(wildcard tests/security) $(wildcard tests/api)

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
	$(BIN)/pytest -q -p no:cacheprovider -n 2 $(FAST_TIERS)
	$(BIN)/pytest -q -p no:cacheprovider tests/integration tests/browser

## make unit: the fast tiers (unit, web, db, security, api: no Docker, no browser), on both cores
unit: install
	$(BIN)/pytest -q -p no:cacheprovider -n 2 $(FAST_TIERS)

integration: install
	scripts/ensure-docker.sh
	$(BIN)/pytest -q -p no:cacheprovider tests/integration

browser: install
	scripts/ensure-browser.sh
	$(BIN)/pytest -q -p no:cacheprovider tests/browser
