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

# The Triton server side (`hgdeploy serve`): a separate venv, because Triton's python backend
# stub silently corrupts tensors under numpy 2 (inputs arrive as zeros). It holds what the
# python-backend models import: hgdeploy itself (--no-deps, this checkout), numpy<2, the CPU
# runtimes, torch (the CornerNet decode), and OpenCV at exactly the project env's version (a
# different build's warpAffine moves pixels by a few grey levels, which moves pose keypoints).
# tritonserver comes from the nvidia-pytriton wheel, unpacked (not installed: it pins numpy<2),
# with the stub for this Python copied into its python backend.
SERVER_VENV := .venv-triton
SERVER_BIN := $(SERVER_VENV)/bin
TRITON_WHEEL := nvidia-pytriton==0.7.0
TRITON_DIR := $(SERVER_VENV)/tritonserver
TRITON_HOME := $(TRITON_DIR)/pytriton/tritonserver
SERVER_PACKAGES := "numpy<2" onnx onnxruntime openvino polygraphy click rich pillow
VERSION_OF = $(BIN)/python -c 'import importlib.metadata as m; print(m.version("$(1)"))'

$(SERVER_VENV)/.installed: pyproject.toml $(VENV)/.installed
	rm -rf $(SERVER_VENV)
	$(PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_BIN)/python -m pip install -q --upgrade pip
	$(SERVER_BIN)/python -m pip install -q $(TORCH_PIN) $(SERVER_PACKAGES)
	$(SERVER_BIN)/python -m pip install -q --no-deps \
		opencv-python-headless==$$($(call VERSION_OF,opencv-python-headless)) -e .
	$(SERVER_BIN)/python -m pip download -q --no-deps $(TRITON_WHEEL) -d $(SERVER_VENV)/wheel
	$(SERVER_BIN)/python -m zipfile -e $(SERVER_VENV)/wheel/*.whl $(TRITON_DIR)
	rm -rf $(SERVER_VENV)/wheel
	cp $(TRITON_HOME)/python_backend_stubs/$$($(SERVER_BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')/triton_python_backend_stub $(TRITON_HOME)/backends/python/
	chmod +x $(TRITON_HOME)/bin/tritonserver $(TRITON_HOME)/backends/python/triton_python_backend_stub
	touch $@

install: $(VENV)/.installed $(SERVER_VENV)/.installed

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
	rm -rf $(VENV) $(GPU_VENV) $(SERVER_VENV) artifacts
