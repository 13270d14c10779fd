# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/chestdx: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0   # CPU build first, so nothing pulls a CUDA torch
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps torchxrayvision==1.5.7   # tests/test_xrv.py only; --no-deps: no torchvision
	touch $(BIN)/chestdx

install: $(BIN)/chestdx

demo: install
	$(BIN)/chestdx demo --out runs/demo

test: install
	$(BIN)/pytest -q

# Debian Chromium for the browser test (tests/test_serve_browser.py); needs root. Never `playwright install`.
browser:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/run.py

.PHONY: install demo test lint bench browser
