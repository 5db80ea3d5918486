# Two commands set everything up on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Nothing here may reach the Hub: the embedded default and the tests run offline.
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM = false
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test docs clean

install: $(VENV)/.installed

# torch/torchvision are pinned to the builds this machine kind keeps on disk (see README, "Set-up").
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# One torch thread per physical core: hyperthread siblings slow these small models down (README, "The embedded
# default"). Expanded when the recipe runs, after the venv (and psutil, an accelerate dependency) exists.
THREADS = $(shell $(BIN)/python -c "import psutil; print(psutil.cpu_count(logical=False) or 1)")

run: install
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(THREADS) scripts/run.py $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The documentation site (docs/, mkdocs.yml) into build/site; --strict fails on a broken link or reference.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) outputs .pytest_cache
