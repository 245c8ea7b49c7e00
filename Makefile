# cnnforge front door. Every target creates the virtual environment on first use and installs
# the project (with its dev extras) from PyPI; nothing else needs to be on the machine besides
# Python, a C++ compiler, make and perl.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NET    ?= examples/digits/net.py
OUT    ?= build/digits
IMAGES ?= 100
PYTEST_ARGS ?=

.PHONY: all venv demo test test-fast verilog sim train benchmarks clean

all: demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make demo: the main job on the bundled digits example
demo: $(STAMP)
	$(BIN)/cnnforge run $(NET) --images $(IMAGES) --json $(OUT)/report.json

## make test: the whole test suite (slow RTL tests included)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-fast: skip the tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## make verilog: the accelerator's Verilog for NET
verilog: $(STAMP)
	$(BIN)/cnnforge verilog $(NET) -o $(OUT)/accelerator.v

## make sim: RTL simulation of NET against the golden model
sim: $(STAMP)
	$(BIN)/cnnforge sim $(NET) --images $(IMAGES) --json $(OUT)/sim.json

## make train: retrain the digits example (writes examples/digits/weights.npz)
train: $(STAMP)
	$(BIN)/python examples/digits/train.py

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/utilization.py

clean:
	rm -rf build
