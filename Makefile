# One-command set-up: `make test` and `make demo` create .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= all,dev,ref

.PHONY: setup test test-all test-browser test-packaging lint typecheck demo clean-venv

# The package declares a torch range (pyproject.toml); the tested CPU wheel is pinned here, installed first.
TORCH_PIN ?= torch==2.13.0
ARTIFACTS ?= artifacts

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# the web page in headless Chromium (needs Debian's chromium + chromium-driver); fails instead of skipping
test-browser: $(STAMP)
	ANYDEPTH_REQUIRE_BROWSER=1 ANYDEPTH_TEST_ARTIFACTS=$(abspath $(ARTIFACTS)) $(PY) -m pytest -q -m slow tests/test_serve_browser.py

# build sdist + wheel, install the wheel into a fresh venv, run the CLI and the web page's files from it
test-packaging: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_packaging.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard scripts)
	$(VENV)/bin/ruff format --check src tests $(wildcard scripts)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) -m anydepth.cli.main demo --output runs/demo

clean-venv:
	rm -rf $(VENV)
