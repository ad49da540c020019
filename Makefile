# The README's first two commands, on a fresh Debian / Raspberry Pi OS machine
# with Python 3.11: `make run` and `make test`.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# System packages the tests need: a real MQTT broker, and openssl for test certificates.
TEST_SYSTEM_PACKAGES := mosquitto openssl

.PHONY: run test check lint typecheck schemas train clean help system-deps

help:
	@echo "make run    - analyse one sample on the simulated analyzer (creates .venv; ARGS=\"--seed 3\")"
	@echo "make test   - install test dependencies (incl. mosquitto) and run the test suite"
	@echo "make check  - ruff, mypy and the tests"
	@echo "make schemas - regenerate docs/*.schema.json from the models"
	@echo "make train  - train, quantize and card both models (needs ../shared/data)"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamps so the venv is reinstalled only when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.runtime

$(VENV)/.train: pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev,train]"
	@touch $@ $(VENV)/.dev $(VENV)/.runtime

system-deps:
	@missing=""; for p in $(TEST_SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# One sample on the simulated analyzer; a throwaway mosquitto on localhost:1883 is
# started for it when mosquitto is installed and no broker listens there.
# Demo options pass through ARGS, e.g. make run ARGS="--seed 3 --target 100".
run: $(VENV)/.runtime
	scripts/demo.sh $(ARGS)

test: $(VENV)/.dev system-deps
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

check: lint typecheck test

schemas: $(VENV)/.dev
	$(PY) scripts/gen_schemas.py

train: $(VENV)/.train
	$(PY) scripts/train_classifier.py --tta dihedral8
	$(PY) scripts/train_detector.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
