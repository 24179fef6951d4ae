# Two commands do all the set-up:  `make run`  and  `make test`.
# The virtual environment lives in .venv; medtl is installed into it in editable mode.
# To keep a CUDA build of PyTorch that your Python already has, create the venv with
# access to it:  make run VENV_FLAGS=--system-site-packages

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_PIN ?= torch==2.13.0
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run test lint dry-run clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@# Keep an existing torch (e.g. a CUDA build); otherwise install the pinned CPU wheel.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

run: install  ## run the whole workflow (on the built-in demo unless config says otherwise)
	$(BIN)/snakemake --profile profiles/local

dry-run: install  ## show what `make run` would do
	$(BIN)/snakemake --profile profiles/local -n

test: install  ## run the test suite
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check medtl tests
	$(BIN)/ruff format --check medtl tests

clean:  ## remove results, logs and the demo data (not the venv)
	rm -rf results logs data/demo .snakemake
