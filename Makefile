# Tokenflow: every set-up step lives here, so a fresh clone needs only Python and make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs Python 3.13: use it when pyenv has it, else the machine's python3.
PYTHON ?= $(shell p=$$(pyenv prefix 3.13.0 2>/dev/null) && [ -x "$$p/bin/python3" ] && echo "$$p/bin/python3" || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_REGION ?= us-east-1
export AWS_ACCOUNT_ID_ENDPOINT_MODE := disabled
export POWERTOOLS_DEV ?= false
export SAM_CLI_TELEMETRY := 0

DEVICES ?= 25
TOKENS ?= 30

.PHONY: help venv chromium particle-sdk lint test test-fast test-unit test-integration test-e2e template firmware-test sam-build run bench bench-fleet lock deploy clean

help:
	@echo "make run    - the whole system on this machine (no AWS account, no Docker)"
	@echo "make test   - lint, unit, integration and end-to-end tests, template checks, firmware tests"
	@echo "make test-fast - the tests not marked slow (a minute or two, for development; make test runs all)"
	@echo "make bench  - the benchmarks under bench/ (results recorded in bench/README.md)"
	@echo "make bench-fleet - the fleet benchmark: 100,000 devices through the local stack (FLEET_DEVICES, RATE_SCALE)"
	@echo "make deploy - sam build + sam deploy --guided"

$(STAMP): requirements-dev.txt layers/tokenflow/requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# checkov pins boto3 1.35 exactly, which the dev environment cannot share: it gets its own venv,
# locked in requirements-checkov.txt. It reads the template as the SAM transform leaves it.
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

$(CHECKOV_STAMP): requirements-checkov.txt $(STAMP)
	@test -x $(CHECKOV_VENV)/bin/python || $(BIN)/python -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	@touch $@

template: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --template-file template.yaml
	$(BIN)/python -m tools.sam_translate template.yaml -o build/template.translated.json
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f build/template.translated.json

firmware-test:
	$(MAKE) -C firmware test

# sam build needs the runtime's exact Python on PATH; skip (and say so) where it is absent.
sam-build: $(STAMP)
	@p=$$(pyenv prefix 3.13.0 2>/dev/null); \
	if [ -n "$$p" ] && [ -x "$$p/bin/python3.13" ]; then \
	  PATH="$$p/bin:$$PWD/$(BIN):$$PATH" $(BIN)/sam build --template-file template.yaml --build-dir build/sam >/dev/null && echo "sam build: ok"; \
	else echo "sam build: skipped (Python 3.13 is not on this machine)"; fi

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

test-e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q

# While developing: every test but those marked slow (> 5 s; pyproject.toml). CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/pytest -q -n 2 -m "not slow"

# Particle's official JS SDK (pinned by package-lock.json) for the contract test against the Particle
# simulator (tests/contract). Without npm it says so and the contract test skips.
SDK_DIR := tests/contract/particle_sdk
SDK_STAMP := $(SDK_DIR)/node_modules/.installed

$(SDK_STAMP): $(SDK_DIR)/package.json $(SDK_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --prefix $(SDK_DIR) && touch $@; \
	else echo "particle-sdk: skipped (npm is not on this machine; the SDK contract test will skip)"; fi

particle-sdk: $(SDK_STAMP)

# Headless Chromium for the console's browser tests (tests/browser, Playwright pointed at it: its own
# browser download is not used). Debian's package; nothing to do when it is installed. Needs root.
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	else apt-get update && apt-get install -y --no-install-recommends chromium; fi

# Every test, slow ones included. Any --dist mode is correct (tests/e2e/conftest.py: each end-to-end
# test reaches its point of the story on its own); loadfile starts each module's local stack once.
test: lint template firmware-test chromium $(STAMP) $(SDK_STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile
	$(MAKE) sam-build

# State survives a restart (.local-state/state); FRESH=1 starts clean.
run: $(STAMP)
	$(BIN)/python -m tokenflow_local.run --devices $(DEVICES) --tokens $(TOKENS) $(if $(FRESH),--fresh)

bench: $(STAMP)
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_assign.py
	$(BIN)/python bench/bench_cold_start.py

# The fleet benchmark (bench/README.md, "Fleet"): the whole local stack serving FLEET_DEVICES devices
# with Particle's limit scaled by RATE_SCALE; the defaults are the issue's 100,000 devices at
# Particle's own limit (about 55 minutes here, an hour with the start and the final duplicate scan).
# FLEET_DEVICES=10000 takes about 6 minutes.
FLEET_DEVICES ?= 100000
RATE_SCALE ?= 1
bench-fleet: $(STAMP)
	$(BIN)/python bench/bench_fleet.py --devices $(FLEET_DEVICES) --rate-scale $(RATE_SCALE)

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^tokenflow' > requirements-dev.txt

deploy: $(STAMP)
	PATH="$$(pyenv prefix 3.13.0 2>/dev/null)/bin:$$PWD/$(BIN):$$PATH" $(BIN)/sam build --template-file template.yaml
	$(BIN)/sam deploy --guided

clean:
	rm -rf $(VENV) build .aws-sam .pytest_cache .ruff_cache
