# otalab — set-up and the main jobs. `make demo` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-hardware lab bench lint format clean system-deps browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

system-deps:  ## Mosquitto from the system's packages when missing
	@bash scripts/system-deps.sh

browser-deps:  ## Mosquitto and Chromium (the browser test) when missing
	@bash scripts/system-deps.sh --browser

demo: $(STAMP) system-deps  ## the main job: broker, virtual board, signed update, campaign, charts
	$(VENV)/bin/otalab demo --out data/demo

test: $(STAMP) browser-deps  ## the whole test suite, in parallel (one worker per core; every test has its own ports and folders)
	$(PY) -m pytest -q -p no:cacheprovider -n auto

test-hardware: $(STAMP)  ## the tests that need a real board: make test-hardware PORT=/dev/ttyUSB0
	@test -n "$(PORT)" || { echo "usage: make test-hardware PORT=/dev/ttyUSB0 (the board's serial port)" >&2; exit 2; }
	$(PY) -m pytest -q -p no:cacheprovider -m hardware --port "$(PORT)"

lab: $(STAMP) system-deps  ## JupyterLab on the notebooks (--allow-root when run as root)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

bench: $(STAMP) system-deps  ## benchmarks: printed ratios, not asserted
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check otalib tests bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format otalib tests bench

clean:
	rm -rf $(VENV) data/demo .pytest_cache .hypothesis *.egg-info
