# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs what it needs, then runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint clean

# Which torch goes in first. On a machine without an NVIDIA GPU (no working `nvidia-smi`): the CPU
# build that CI uses, from PyTorch's CPU index (a few hundred MB instead of PyPI's multi-GB CUDA
# build on Linux); requirements.txt's `torch>=2.4` is then already met. With a GPU: requirements.txt
# as it stands (PyPI's torch, a CUDA build). Force either: `make demo TORCH=cpu` or `TORCH=pypi`.
TORCH           ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo pypi || echo cpu)
TORCH_CPU       ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# Where the CPU build comes from: PyTorch's CPU index when it answers within 10 s; else only the
# indexes pip is set up with (a mirror or a wheel folder may hold the CPU build: CI's does). Asked
# once, so that an unreachable index does not cost pip's timeout for torch and each of its deps.
TORCH_FROM = $(shell $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" \
               >/dev/null 2>&1 && echo cpu-index || echo configured)

.PHONY: torch-build torch-from
torch-build:  ## print the torch build `make` installs here (cpu or pypi)
	@echo $(TORCH)
torch-from:  ## print where the CPU build would come from (cpu-index or configured)
	@echo $(TORCH_FROM)

$(VENV)/.installed: requirements.txt pyproject.toml
	@case "$(TORCH)" in cpu|pypi) ;; *) echo "TORCH must be cpu or pypi, got '$(TORCH)'" >&2; exit 2;; esac
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ "$(TORCH)" = cpu ]; then \
	  from="$(TORCH_FROM)"; \
	  echo "no NVIDIA GPU found (nvidia-smi): installing the CPU build of torch ($(TORCH_CPU), from $$from)"; \
	  if [ "$$from" = cpu-index ]; then extra="--extra-index-url $(TORCH_CPU_INDEX)"; else extra=""; fi; \
	  $(BIN)/python -m pip install --quiet $$extra "$(TORCH_CPU)" && \
	  $(BIN)/python -W ignore -c "import sys, torch; sys.exit(torch.version.cuda and \
	    f'a CUDA build of torch was installed ({torch.__version__}, from $$from): the CPU index \
	    $(TORCH_CPU_INDEX) did not answer or lacks $(TORCH_CPU); make TORCH=pypi keeps it')"; \
	fi
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m grpo_lite demo --output-dir runs/demo --overwrite

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy grpo_lite rewards
	$(BIN)/lint-imports

# The suite runs on TEST_WORKERS processes (pytest-xdist), each with its share of the cores as torch
# threads: on CI's 2 cores, 2 workers of 1 thread finish sooner than 1 of 2 (two 2-thread processes
# on 2 cores stall each other). `make test TEST_WORKERS=1` runs it in one process. The tests marked
# `alone` (the sandbox's attacks, timed against wall-clock limits) run afterwards, by themselves.
TEST_WORKERS ?= 2
TEST_THREADS  = $(shell $(PYTHON) -c "import os; print(max(1, (os.cpu_count() or 1) // $(TEST_WORKERS)))")

test: lint
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not alone"
	$(BIN)/python -m pytest -q -m alone

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
