# Two commands on a fresh machine: `make reproduce` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
PROFILE ?= cpu
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888

.PHONY: setup data test test-fast reproduce smoke lab bench clean fuzz

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[study,dev,cluster]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# Real FashionMNIST offline: Debian's dataset-fashion-mnist where apt and root are available.
data:
	@if ls $(FMNIST_DIR)/train-images-idx3-ubyte* >/dev/null 2>&1 || ls data/fashionmnist/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		echo "FashionMNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "FashionMNIST: installing Debian's dataset-fashion-mnist"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "FashionMNIST: apt-get failed; the cpu profile will look in data/fashionmnist/ or download with torchvision"; \
	else \
		echo "FashionMNIST: not installed. Put the four idx files in data/fashionmnist/, run 'sudo apt-get install dataset-fashion-mnist', or stay online so torchvision downloads them."; \
	fi

# Unit tests, then every notebook under nbval with the smoke profile (kernels start in notebooks/;
# outputs go to build/smoke/; --nbval-lax fails on any cell that raises: the checks are asserts).
# The unit tests run in 2 processes (pytest-xdist, one test file per process at a time, so a file's
# shared fixtures are built once); the notebooks one after another.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25 tests
	HTR_PROFILE=smoke $(PY) -m pytest -q --nbval-lax --nbval-current-env notebooks

# The unit tests without the slow ones (training, papermill, benchmarks): a quick check while editing.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# The run grid first (htr_utils.study.grid: every run the notebooks need, with the spectra readings):
# on a Dask LocalCluster of TRAIN_PROCS one-thread workers sharing the run cache through its locks (default 2:
# on this project's 2-core CPU two one-thread workers train the grid 1.13x faster than one 2-thread process,
# benchmarks/RESULTS.md), or with TRAIN_PROCS=1 one run after another with torch's threads (its runs round
# differently from the committed ones, which come from one-thread workers; the grid starts the longest runs first and
# each study's HTR arms and acting-dose arm as soon as their γ grid is done); the notebooks then read the cache
# (and would train whatever the grid lacks), NB_JOBS at a time, each
# in its own process (their computation is mostly one-thread Python, so two at once use both cores).
TRAIN_PROCS ?= 2
NB_JOBS ?= 2
reproduce: setup
	@if [ "$(TRAIN_PROCS)" = 1 ]; then \
		$(PY) -m htr_utils.study.grid train --profile $(PROFILE); \
	else \
		$(PY) -m htr_utils.study.grid train --profile $(PROFILE) --workers $(TRAIN_PROCS) --threads 1; \
	fi
	$(PY) -m htr_utils.study.reproduce --profile $(PROFILE) --jobs $(NB_JOBS)

smoke: setup
	$(PY) -m htr_utils.study.reproduce --profile smoke --out build/smoke

# JupyterLab on notebooks/ with this project's kernel (python3 of $(VENV)); the notebooks' default
# profile is $(PROFILE) (`make lab PROFILE=smoke` for a quick look). The token is JUPYTER_TOKEN or
# a fresh random one; the URL to open is printed first. Root gets --allow-root (JupyterLab refuses
# root without it); kernels get CurveZMQ transport encryption where the kernel supports it.
lab: setup
	@token="$${JUPYTER_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_hex(24))')}"; \
	root_flag=; if [ "$$(id -u)" = 0 ]; then root_flag=--allow-root; \
		echo "make lab: running as root, so JupyterLab is started with --allow-root"; fi; \
	echo "make lab: notebooks/ with kernel python3 of $(VENV); notebooks default to profile $(PROFILE)"; \
	echo "make lab: open http://$(LAB_IP):$(LAB_PORT)/lab?token=$$token  (Ctrl-C twice stops it)"; \
	JUPYTER_TOKEN="$$token" HTR_PROFILE=$(PROFILE) exec $(VENV)/bin/jupyter lab --no-browser $$root_flag \
		--ServerApp.root_dir=notebooks --ServerApp.ip=$(LAB_IP) --ServerApp.port=$(LAB_PORT) \
		--ServerApp.port_retries=0 --MappingKernelManager.default_kernel_name=python3 \
		--MappingKernelManager.transport_encryption=auto

# The model fuzzer (tests/fuzz_models.py): random small models checked against dense float64 references
# for FUZZ_MINUTES (default 20) from a random first seed (FUZZ_START to repeat a run); FUZZ_SEED=S
# replays one case. Prints every failing seed and exits non-zero if any case failed.
FUZZ_MINUTES ?= 20
fuzz: setup
	OMP_NUM_THREADS=1 FUZZ_MINUTES=$(FUZZ_MINUTES) FUZZ_SEED=$(FUZZ_SEED) FUZZ_START=$(FUZZ_START) $(PY) -m tests.fuzz_models

bench: setup
	$(PY) -m pip install -q -e '.[study,dev,peers]'
	$(PY) -m benchmarks

clean:
	rm -rf build .pytest_cache
