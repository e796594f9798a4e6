# sigsleuth: set-up, demo and tests. `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Anything that arms this machine holds this lock, so two runs never fight over tracing or audit.
LOCK := /run/sigsleuth-test.lock
LOCKED := $(shell command -v flock >/dev/null 2>&1 && [ -w /run ] && echo flock $(LOCK))

.PHONY: help venv demo test lint unit integration molecule bench clean collection sanity

help:
	@echo "make demo   - create .venv, arm this machine, replay the seed's mystery, print who killed the agent, disarm"
	@echo "make test   - create .venv and run lint, unit tests, integration tests and molecule"
	@echo "make collection - build the collection sigsleuth.sigsleuth under build/ and print the tarball's path"
	@echo "make sanity - ansible-test sanity on the built collection (offline: see collection/sanity.py)"
	@echo "other targets: venv lint unit integration molecule bench clean"

venv: $(STAMP) $(BIN)/sigsleuth

# The stamp makes re-running cheap; it is redone whenever a requirements or constraints file changes.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

# `sigsleuth analyze` (cli/sigsleuth.py): this tree's engine and report writer, run by the venv's Python.
$(BIN)/sigsleuth: cli/sigsleuth.py $(STAMP)
	printf '#!/bin/sh\nexec "%s" "%s" "$$@"\n' "$(CURDIR)/$(BIN)/python" "$(CURDIR)/cli/sigsleuth.py" > $@
	chmod 0755 $@

demo: venv
	$(LOCKED) $(BIN)/ansible-playbook playbooks/demo.yml

# Lint and unit tests first: they are fast and arm nothing.
test: venv
	$(MAKE) lint unit sanity
	$(MAKE) integration
	$(MAKE) molecule

lint: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint
	$(BIN)/antsibull-changelog lint

unit: venv
	$(BIN)/pytest tests/unit

# Integration tests take the lock themselves, test by test.
integration: venv
	$(BIN)/pytest tests/integration

molecule: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(LOCKED) $(BIN)/molecule test

# The collection, assembled from this tree (collection/build.py); prints the tarball's path.
collection: venv
	$(BIN)/python collection/build.py

# ansible-test sanity on the tarball as built, installed outside this tree; needs no download but the
# package index's (collection/get_pip.py stands in for ansible-test's pip bootstrap script).
sanity: venv
	tarball=$$($(BIN)/python collection/build.py) && $(BIN)/python collection/sanity.py "$$tarball"

# Benchmarks arm this machine (they hold the lock themselves); CI runs none of them.
bench: venv
	$(BIN)/python bench/bench_overhead.py
	$(BIN)/python bench/bench_retention.py

clean:
	rm -rf $(VENV) .pytest_cache .ansible molecule/default/.cache build .cache/ansible-test
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
