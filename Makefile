# Two commands do all the set-up on a fresh machine:
#   make serve   install everything, pull the offline models, start the agent server
#   make test    install everything (test tools included), pull the models, run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch for the voices extra: the machine's CPU-only wheel when there is one (PyPI's Linux torch is the CUDA
# build, several GB); elsewhere set TORCH_CPU='--index-url https://download.pytorch.org/whl/cpu
# --extra-index-url https://pypi.org/simple --index-strategy unsafe-best-match' (docs/voices.md).
TORCH_CPU ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels)

.PHONY: install serve test lint bench system-deps

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/uv pip install --python $(BIN)/python -c requirements.lock $(TORCH_CPU) -e '.[dev,voices]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

serve: install
	$(BIN)/voxline models pull default
	$(BIN)/voxline serve

test: install system-deps
	$(BIN)/voxline models pull default
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/stt.py && $(BIN)/python bench/tts.py
