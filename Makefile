# Keystone: `make run` starts everything; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The fast tiers run in parallel (pytest-xdist). The sandbox tiers run on three xdist workers,
# a module at a time each (--dist loadfile), each worker on its own sandbox (NAME-gw0..gw2):
# most of a deploy test's time is waiting (health checks, load windows, SSH), not CPU, so a
# third worker on the 2-core machine still shortens the run (README, "Wall time").
SANDBOX_WORKERS ?= 3
FAST_TIERS := tests/unit tests/web tests/db $(wildcard tests/security) $(wildcard tests/api)

# requirements.lock pins every package of a working install (pip constraints, so a
# dependency added to pyproject.toml but not yet locked still installs). `make lock`
# rewrites it from a fresh venv.
LOCK := requirements.lock

.PHONY: install lock run test unit integration browser bench clean-sandbox

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev,test]'
	touch $(STAMP)

lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -e '.[dev,test]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e ' > $(LOCK)
	rm -rf .venv-lock

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
	$(BIN)/pytest -q -p no:cacheprovider -n $(SANDBOX_WORKERS) --dist loadfile --durations=25 tests/integration tests/browser

## make unit: the fast tiers (unit, web, db, security, api: no Docker, no browser), on both cores
unit: install
	$(BIN)/pytest -q -p no:cacheprovider -n 2 $(FAST_TIERS)

integration: install
	scripts/ensure-docker.sh
	$(BIN)/pytest -q -p no:cacheprovider tests/integration

browser: install
	scripts/ensure-browser.sh
	$(BIN)/pytest -q -p no:cacheprovider tests/browser
