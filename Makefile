# Two commands: `make run` starts the app, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501

.PHONY: run test test-fast setup clean benchmark lint serve-public

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed ($(PYTHON) not found); set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run streamlit_app.py --server.port $(PORT)

# The shared-link configuration of the Dockerfile, without Docker (docs/SECURITY.md): public mode,
# no typed folder paths, XSRF on, error details reduced to the exception type. Override ADDRESS,
# UTKFACE_DATA_ROOTS (NAME=PATH:NAME=PATH) and the limits (UTKFACE_*) in the environment.
ADDRESS ?= 0.0.0.0
serve-public: $(STAMP)
	UTKFACE_MODE=public $(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --server.address $(ADDRESS) \
		--server.headless true --server.enableXsrfProtection true --server.enableCORS true \
		--server.fileWatcherType none --server.runOnSave false --server.maxUploadSize 500 \
		--client.showErrorDetails type --client.toolbarMode viewer --browser.gatherUsageStats false

# Lint first: a style or import error fails in seconds, before the long suite.
test: lint
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmark: $(STAMP)
	$(PY) benchmarks/time_to_accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache
