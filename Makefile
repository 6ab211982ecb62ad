# Setup path used by the README and by CI: a local .venv with the CPU build of torch pinned
# first (an unpinned torch would pull several GB of CUDA packages), then hgdeploy itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/hgdeploy models
	$(BIN)/hgdeploy predict --model squeeze

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts
