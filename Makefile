# ssl-biases: `make demo` and `make test` set up everything they need on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
RUNS ?= runs
EXP ?= bias_cifar10_small
# Stacked configs for `make fit`; override any of them: make fit BACKBONE=mixer_tiny METHOD=byol
METHOD ?= simclr
BACKBONE ?= vit_tiny
DATA ?= shapes
TRAINER ?= cpu
ARGS ?=

.PHONY: install demo test lint format fit tensorboard backbones backbone-configs sweep clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,onnx]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install the package with dev tools and the onnx extra

demo: install  ## pretrain SimCLR on shapes (CPU), compare probes with a random backbone
	$(PY) -m ssl_biases.cli.demo

test: install  ## run the test suite
	$(PY) -m pytest -n auto  # pytest-xdist: one worker per core (8-10.5 min on 2 cores: clean-clone CI 2026-12-07)

lint: install  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## ruff autofix + format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

fit: install  ## one run from stacked configs: make fit METHOD=byol BACKBONE=mixer_tiny DATA=shapes
	$(BIN)/ssl-biases fit --config configs/method/$(METHOD).yaml \
		--config configs/backbone/$(BACKBONE).yaml --config configs/data/$(DATA).yaml \
		--config configs/trainer/$(TRAINER).yaml $(ARGS)

tensorboard: install  ## open TensorBoard on the runs directory
	$(BIN)/tensorboard --logdir $(RUNS)

backbones: install  ## table of registered backbones: params, FLOPs, tokens
	$(BIN)/ssl-biases backbones

backbone-configs: install  ## rewrite configs/backbone/*.yaml from the registry presets
	$(PY) -m ssl_biases.backbones.preset_configs configs/backbone

sweep: install  ## run an experiment grid: make sweep EXP=bias_cifar10_small
	$(BIN)/ssl-biases sweep configs/experiment/$(EXP).yaml

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf $(RUNS) lightning_logs .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
