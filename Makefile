# The README's two commands: `make synth` (set up, synthesize dev) and `make test`
# (set up, install test tools, run the whole suite). `make e2e` is the intrusive one:
# it starts a mini OpenStack on this machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
ENV ?= dev
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export CHECKPOINT_DISABLE := 1
# cdktf asks the terraform binary for its version; a TF_CLI_CONFIG_FILE naming a file that
# does not exist makes it print a warning banner on every synth.
ifneq ($(TF_CLI_CONFIG_FILE),)
ifeq ($(wildcard $(TF_CLI_CONFIG_FILE)),)
export TF_CLI_CONFIG_FILE :=
endif
endif

.PHONY: setup synth synth-all test test-tools e2e openstack-up openstack-down bench docs clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

synth: setup
	CLUSTER_ENVS=$(ENV) cdktf synth

synth-all: setup
	cdktf synth

test-tools: setup
	@set -e; for script in tests/tools/install-*.sh; do bash "$$script"; done

# `--opt=value`: a separate value would be read as a test path before conftest.py adds the option.
test: test-tools
	$(VENV)/bin/pytest --safety-report=docs/safety-report.md

openstack-up:
	bash tests/e2e/openstack/up.sh

openstack-down:
	bash tests/e2e/openstack/down.sh

e2e: test-tools openstack-up
	$(VENV)/bin/pytest -m e2e tests/e2e

bench: test-tools
	$(VENV)/bin/python bench/synth.py
	$(VENV)/bin/python bench/formation.py
	$(VENV)/bin/python bench/report.py --write

docs: setup
	$(VENV)/bin/python -m stacks.settings_doc --write README.md

clean:
	rm -rf cdktf.out
