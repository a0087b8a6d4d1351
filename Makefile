# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when
# needed and installs everything; nothing is done by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= out
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the package metadata changes. torch goes first, pinned to the CPU build, so
# that resolving the [export] extra finds it satisfied and never pulls CUDA wheels.
$(STAMP): setup.cfg pyproject.toml constraints-cpu.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r constraints-cpu.txt
	$(PIP) install --quiet -c constraints-cpu.txt -e '.[export,openvino,test]'
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check segdeploy tests scripts
	$(BIN)/ruff format --check segdeploy tests scripts
	$(BIN)/vermin -q --no-tips -t=3.6- --violations segdeploy/engines segdeploy/runtime segdeploy/bench \
		segdeploy/__init__.py segdeploy/errors.py segdeploy/card.py segdeploy/_io.py segdeploy/_deps.py \
		segdeploy/datasets.py

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out $(OUT) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

bench: $(STAMP)
	$(BIN)/python scripts/bench_runtime.py --out $(OUT)/bench

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
