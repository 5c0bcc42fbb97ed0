# Two commands do everything (README):
#   make repro  - set up from a clean clone and run `dvc repro` on the embedded default profile
#   make test   - set up and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := true
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup repro test ui browser

setup: $(VENV)/.installed

# torch==2.13.0 is the CPU wheel this machine kind holds on disk; elsewhere any torch>=2.11 will do.
PIP := $(PY) -m pip install -q
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) torch==2.13.0 || $(PIP) "torch>=2.11"
	$(PIP) -e '.[test]'
	# test-only peer: the reference MTCNN for tests/mtcnn/test_parity.py (no deps: its torchvision is stood in)
	$(PIP) --no-deps facenet-pytorch==2.6.0
	touch $@

repro: setup
	dvc repro

test: setup
	$(VENV)/bin/pytest -q

ui: setup
	facebench server

# Optional: a headless Chromium and Playwright for the browser test of the report and the MLflow UI
# (tests/integration/test_report_browser.py skips without them). Chromium comes from the npm registry.
browser: setup
	$(PIP) playwright==1.65.3 brotli==1.2.1
	$(PY) pipelines/get_chromium.py .browser
