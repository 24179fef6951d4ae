# Two commands do all the set-up:  `make run`  and  `make test`.
# The virtual environment lives in .venv; medtl is installed into it in editable mode.
# `make run` installs what the workflow needs and nothing more (stamp .venv/.installed);
# `make test` and `make lint` add the test and lint tools, pyproject's `dev` extra
# (stamp .venv/.installed-dev); the benchmarks add their `bench` extra.
# To keep a CUDA build of PyTorch that your Python already has, create the venv with
# access to it:  make run VENV_FLAGS=--system-site-packages

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH_PIN ?= torch==2.13.0
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install install-dev run test test-all lint dry-run clean bench bench-transfer bench-clinical study-shift

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@# Keep an existing torch (e.g. a CUDA build); otherwise install the pinned CPU wheel.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e .
	touch $@

# The extras are added to the runtime install: `make test` after `make run` only adds them.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

run: install  ## run the whole workflow (on the built-in demo unless config says otherwise)
	$(BIN)/snakemake --profile profiles/local

dry-run: install  ## show what `make run` would do
	$(BIN)/snakemake --profile profiles/local -n

test: install-dev  ## the fast tests: everything but the whole-workflow runs (marked slow)
	$(BIN)/python -m pytest -m "not slow"

test-all: install-dev  ## every test, the whole-workflow runs included (what CI runs)
	$(BIN)/python -m pytest

lint: install-dev  ## ruff's checks and its format check, on the package, the tests and the benchmarks
	$(BIN)/ruff check medtl tests benchmarks studies
	$(BIN)/ruff format --check medtl tests benchmarks studies

# nnU-Net v2 for the benchmark lives in its own environment: its dependencies pin another
# torch (2.14.1 with torchvision 0.29.1) than medtl's.
NNUNET_VENV ?= benchmarks/.venv-nnunet
NNUNET_PINS ?= torch==2.14.1 torchvision==0.29.1 "nnunetv2>=2.8,<2.9"
BENCH_ARGS ?=

$(NNUNET_VENV)/.installed:
	$(PYTHON) -m venv $(NNUNET_VENV)
	$(NNUNET_VENV)/bin/python -m pip install -q $(NNUNET_PINS)
	touch $@

bench: $(VENV)/.installed-bench $(NNUNET_VENV)/.installed  ## medtl against nnU-Net v2 on the demo → docs/benchmarks.md
	$(BIN)/python benchmarks/compare_nnunet.py --nnunet-venv $(NNUNET_VENV) $(BENCH_ARGS)

bench-transfer: $(VENV)/.installed-bench $(NNUNET_VENV)/.installed  ## medtl fine-tuning an nnssl-layout ResEnc against nnU-Net's ResEnc M → docs/benchmarks.md
	$(BIN)/python benchmarks/compare_transfer.py --nnunet-venv $(NNUNET_VENV) $(BENCH_ARGS)

bench-clinical: $(VENV)/.installed-bench $(NNUNET_VENV)/.installed  ## medtl against nnU-Net v2 on CT-like cases of 512 × 512 × 120 → docs/benchmarks.md
	$(BIN)/python benchmarks/compare_clinical.py --nnunet-venv $(NNUNET_VENV) $(BENCH_ARGS)

STUDY_ARGS ?=

study-shift: install  ## the demo at several shift strengths: transfer gain against measured shift → docs/domain-shift.md
	$(BIN)/python studies/shift_study.py $(STUDY_ARGS)

clean:  ## remove results, logs and the demo data (not the venv)
	rm -rf results logs data/demo .snakemake
