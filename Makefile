# Everything a fresh Linux machine with Python 3.11 needs: `make segment` (the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
# Use the offline Tiny-VAE weights and data beside the checkout when they are there.
ifneq ($(wildcard $(SHARED)/weights/taef2_decoder.pth),)
export WAVEGMS_WEIGHTS_DIR ?= $(SHARED)/weights
export WAVEGMS_DATA_DIR ?= $(SHARED)/data
endif
INPUT ?= $(SHARED)/data/busi/images
OUTPUT ?= out/busi-masks
MODEL ?=
# Run again with the CPU precision path this machine does not take by itself (bf16 ↔ fp32): the tests whose
# numbers depend on it, so that both paths are tested whichever CPU runs the suite.
PRECISION_TESTS := tests/unit/test_device.py tests/integration/test_inference.py tests/integration/test_precision.py \
	tests/integration/test_recipes.py tests/integration/test_unknown_kind.py tests/integration/test_presence.py

.PHONY: segment test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[testing]"
	touch $@

segment: $(BIN)/.installed
	$(BIN)/wavegms-predict "$(INPUT)" "$(OUTPUT)" $(if $(MODEL),--model "$(MODEL)") --overlays

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests training

test: $(BIN)/.installed
	bash scripts/system-deps.sh
	$(BIN)/ruff check src tests training
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(BIN)/python -m pytest -q -p no:cacheprovider --other-precision $(PRECISION_TESTS)

clean:
	rm -rf $(VENV) build *.egg-info
