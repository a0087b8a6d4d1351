# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv when
# needed and installs everything; nothing is done by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= out
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv clean py36 serve-env quantizers-env device-env

# The Python 3.6 lane (Jetson TX2 / JetPack 4.6): pyenv's 3.6 when there is one, else python3.6
# on PATH; `make PYTHON36=/path/to/python3.6` picks another. Without one the lane says so and
# tests/py36 skip with that reason.
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON36 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.6*/bin/python3.6) \
	$(shell command -v python3.6 2>/dev/null))
VENV36   := .venv36
STAMP36  := $(VENV36)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the package metadata changes. torch goes first, pinned to the CPU build, so
# that resolving the [export] extra finds it satisfied and never pulls CUDA wheels.
$(STAMP): setup.cfg pyproject.toml constraints-cpu.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r constraints-cpu.txt
	$(PIP) install --quiet -c constraints-cpu.txt -e '.[export,openvino,test,serve]'
	@touch $@

venv: $(STAMP)

# The Triton server the serving tests start (nvidia-pytriton ships tritonserver and its Python
# backend) lives in its own environment: pytriton pins numpy < 2, which OpenCV 5 refuses.
SERVE_VENV  ?= .venv-triton
SERVE_STAMP := $(SERVE_VENV)/.installed

$(SERVE_STAMP): requirements-triton.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --quiet -r requirements-triton.txt
	@touch $@

serve-env: $(SERVE_STAMP)

# The INT8 quantizers segdeploy was compared with (scripts/compare_quantizers.py); not part of
# make test. Its own environment: nvidia-modelopt replaces onnxruntime with onnxruntime-gpu.
QUANT_VENV  ?= .venv-quantizers
QUANT_STAMP := $(QUANT_VENV)/.installed

$(QUANT_STAMP): requirements-quantizers.txt
	$(PYTHON) -m venv $(QUANT_VENV)
	$(QUANT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUANT_VENV)/bin/python -m pip install --quiet $$(grep '^torch==' requirements-quantizers.txt)
	$(QUANT_VENV)/bin/python -m pip install --quiet -r requirements-quantizers.txt
	@touch $@

quantizers-env: $(QUANT_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check segdeploy tests scripts
	$(BIN)/ruff format --check segdeploy tests scripts
	$(BIN)/vermin -q --no-tips -t=3.6- --violations segdeploy/engines segdeploy/runtime segdeploy/bench \
		segdeploy/__init__.py segdeploy/_version.py segdeploy/errors.py segdeploy/card.py segdeploy/_io.py segdeploy/_deps.py \
		segdeploy/datasets.py segdeploy/eval segdeploy/samples.py segdeploy/_cli.py segdeploy/_native.py segdeploy/manifest.py segdeploy/plugins segdeploy/export/dblock.py \
		segdeploy/serve segdeploy/check tests/device

# pip 21.3.1 is the last pip for 3.6; `pip install .` (not editable) is what a device does.
$(STAMP36): setup.cfg setup.py pyproject.toml requirements-py36.txt $(shell find segdeploy -name '*.py')
	rm -rf $(VENV36)
	$(PYTHON36) -m venv $(VENV36)
	$(VENV36)/bin/python -m pip install --quiet 'pip==21.3.1'
	$(VENV36)/bin/python -m pip install --quiet -r requirements-py36.txt
	$(VENV36)/bin/python -m pip install --quiet .
	@touch $@

py36:
	@if [ -z "$(PYTHON36)" ]; then \
		echo "Python 3.6 lane skipped: no python3.6 here (pyenv install 3.6.15, or make PYTHON36=...)"; \
	else $(MAKE) --no-print-directory $(STAMP36) $(PIP9_STAMP) $(CMAKE310_STAMP) && \
		echo "Python 3.6 lane: $(VENV36) ready"; fi

# JetPack 4.6 as it comes: Python 3.6, pip 9.0.1, setuptools 39.0.1 and apt's numpy 1.13.3 (pip 9
# console scripts check install_requires at start-up). tests/py36/test_pip9_jetpack.py installs
# the checkout into it with `pip install --no-deps .` and runs the console scripts (~35 s, once).
PIP9_VENV  := .venv-pip9
PIP9_STAMP := $(PIP9_VENV)/.installed

$(PIP9_STAMP):
	rm -rf $(PIP9_VENV)
	$(PYTHON36) -m venv $(PIP9_VENV)
	$(PIP9_VENV)/bin/python -m pip install --quiet 'pip==21.3.1'
	$(PIP9_VENV)/bin/python -m pip install --quiet 'numpy==1.13.3' 'setuptools==39.0.1'
	$(PIP9_VENV)/bin/python -m pip install --quiet 'pip==9.0.1'
	@touch $@

# CMake 3.10 (JetPack 4.6 has 3.10.2) for tests/plugins/test_dblock_build.py: the registry's
# 3.10.3 wheels are tagged for Python 3.6 (~35 s, once).
CMAKE310_VENV  := .venv-cmake310
CMAKE310_STAMP := $(CMAKE310_VENV)/.installed

$(CMAKE310_STAMP):
	rm -rf $(CMAKE310_VENV)
	$(PYTHON36) -m venv $(CMAKE310_VENV)
	$(CMAKE310_VENV)/bin/python -m pip install --quiet --only-binary=:all: 'cmake==3.10.3'
	@touch $@

# The device test lane (tests/device, tests/engines, tests/runtime, tests/plugins) in a torch-,
# onnx- and cv2-free $(PYTHON) (3.11 here), as a T4 or Orin owner installs it: `pip install --no-deps .`
# and requirements-device.txt. tests/device/test_device_lane.py collects the lane in it (~30 s, once).
DEVICE_VENV  := .venv-device
DEVICE_STAMP := $(DEVICE_VENV)/.installed

$(DEVICE_STAMP): setup.cfg setup.py pyproject.toml requirements-device.txt
	rm -rf $(DEVICE_VENV)
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet --no-deps .
	$(DEVICE_VENV)/bin/python -m pip install --quiet -r requirements-device.txt
	@touch $@

device-env: $(DEVICE_STAMP)

test: lint py36 serve-env device-env
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out $(OUT) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

bench: $(STAMP)
	$(BIN)/python scripts/bench_runtime.py --out $(OUT)/bench

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache $(VENV36) $(PIP9_VENV) $(DEVICE_VENV) $(CMAKE310_VENV)
