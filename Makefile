# crobust — `make test` and `make reproduce` work on a fresh machine: both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PRESET ?= auto
STAMP   = $(VENV)/.installed

.PHONY: install test reproduce bench bench-extras gpu-check gpu-check-device device-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

# 2 pytest-xdist workers, each test module whole on one of them (tests/conftest.py says why).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadscope

# PRESET=auto picks `paper` on a GPU/TPU and `small` on a CPU and says why; PRESET=smoke|small|paper forces one.
reproduce: install
	$(BIN)/python -m experiments.reproduce --preset $(PRESET)

bench: install
	$(BIN)/python -m benchmarks

# On one GPU/TPU: the test suite, the motivating study's small preset and the accelerator benchmarks in < 8 minutes,
# summarised in bench/gpu_check.json (ARGS="--all-studies --resnet": every study, the ResNet-18 target). On a CPU
# it refuses (one line, exit 2); see benchmarks/gpu_check.py for --cpu-dry-run.
gpu-check: install
	$(BIN)/python -m benchmarks.gpu_check $(ARGS)

# A lent GPU machine has no network and a python3 that already holds JAX, flax, optax, torch, pytest...: here,
# `make device-wheels` downloads the wheels of what that image lacks (tensorflow-datasets and its requirements;
# benchmarks/device_env.py) into .whl/; there, `make gpu-check-device` (or benchmarks/gpu_check_device.sh, which
# needs no make) installs them into $(DEVICE_SITE) and runs the check with that python3 (README, "Scaling out").
DEVICE_PY   ?= python3
DEVICE_SITE ?= /tmp/crobust-site
device-wheels: install
	$(BIN)/python -m benchmarks.device_env download --dest .whl

gpu-check-device:
	DEVICE_PY=$(DEVICE_PY) DEVICE_SITE=$(DEVICE_SITE) sh benchmarks/gpu_check_device.sh $(ARGS)

# Optional reference implementations for `make bench` (CPU torch wheel + AutoAttack's PyTorch code) and ART (numpy
# only: the parity test of crobust.attacks.apgd_art against ART's AutoProjectedGradientDescent needs no torch).
bench-extras: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" pyautoattack \
		"adversarial-robustness-toolbox==1.20.1"
	$(BIN)/python -m pytest -q tests/test_attacks_art.py

clean:
	rm -rf runs reports bench .pytest_cache
