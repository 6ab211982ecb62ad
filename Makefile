# Setup path used by the README and by CI: a local .venv with the CPU build of torch pinned
# first (an unpinned torch would pull several GB of CUDA packages), then hgdeploy itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: install demo test clean install-gpu test-gpu

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/hgdeploy models
	$(BIN)/hgdeploy export --model squeeze
	$(BIN)/hgdeploy parity --model squeeze

test: install
	$(BIN)/python -m pytest -q

# GPU machine (NVIDIA driver + CUDA 12/13): PyPI's default torch build is the CUDA one there;
# onnxruntime-gpu replaces onnxruntime (both provide the same module); tensorrt's PyPI package
# fetches the real wheels from NVIDIA's index.
GPU_VENV := .venv-gpu
GPU_BIN := $(GPU_VENV)/bin

$(GPU_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_BIN)/python -m pip install -q --upgrade pip
	$(GPU_BIN)/python -m pip install -q $(TORCH_PIN)
	$(GPU_BIN)/python -m pip install -q -e ".[gpu,test]"
	$(GPU_BIN)/python -m pip uninstall -q -y onnxruntime
	$(GPU_BIN)/python -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.20"
	touch $@

install-gpu: $(GPU_VENV)/.installed

test-gpu: install-gpu
	HGDEPLOY_REQUIRE_GPU=1 $(GPU_BIN)/python -m pytest -q -m "gpu or tensorrt"

clean:
	rm -rf $(VENV) $(GPU_VENV) artifacts
