# cnnforge front door. Every target creates the virtual environment on first use and installs
# the project (with its dev extras) from PyPI; nothing else needs to be on the machine besides
# Python, a C++ compiler, make and perl.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
NET    ?= examples/digits/net.py
OUT    ?= build/digits
IMAGES ?= 100
PYTEST_ARGS ?=
# tests of one file stay on one worker (they share simulator builds); files spread over cores
JOBS ?= auto
DEVICE ?= up5k
BOARD  ?= icebreaker
FLASH_ARGS ?=

.PHONY: all venv demo test test-fast formal verilog sim train benchmarks clean synth bitstream \
        flash benchmark-synth explore benchmark-dataflows benchmark-onnx benchmark-mlperf \
        benchmark-fmax benchmark-sim-speed benchmark-boards benchmark-icebreaker-kws \
        benchmark-scalesim benchmark-floors

all: demo

# the main job's dependencies only; the test and benchmark targets add the dev extras (pytest,
# TensorFlow Lite Micro) and PyTorch (the MobileNet example's training and export tests)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	touch $(DEV_STAMP)

venv: $(STAMP)

## make demo: the main job on the bundled digits example
demo: $(STAMP)
	$(BIN)/cnnforge run $(NET) --images $(IMAGES) --json $(OUT)/report.json

## make test: the whole test suite (slow RTL tests included)
test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile --durations=20 $(PYTEST_ARGS)

## make test-fast: skip the tests marked slow
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## make formal: the formal proofs only (SymbiYosys from PyPI; `make test` runs them too)
formal: $(DEV_STAMP)
	$(BIN)/python -m pytest tests/formal $(PYTEST_ARGS)

## make verilog: the accelerator's Verilog for NET
verilog: $(STAMP)
	$(BIN)/cnnforge verilog $(NET) -o $(OUT)/accelerator.v

## make sim: RTL simulation of NET against the golden model
sim: $(STAMP)
	$(BIN)/cnnforge sim $(NET) --images $(IMAGES) --json $(OUT)/sim.json

## make train: retrain the digits example (writes examples/digits/weights.npz)
train: $(STAMP)
	$(BIN)/python examples/digits/train.py

benchmarks: $(DEV_STAMP)
	$(BIN)/python benchmarks/utilization.py

## make explore DEVICE=up5k|lfe5u-25f|lfe5u-85f: Pareto designs, plan in $(OUT)/plan.json
explore: $(STAMP)
	$(BIN)/cnnforge explore $(NET) --device $(DEVICE) --json $(OUT)/explore-$(DEVICE).json

## make benchmark-dataflows: OR vs IR vs WR per layer, RTL vs model (benchmarks/dataflows.py)
benchmark-dataflows: $(DEV_STAMP)
	$(BIN)/python benchmarks/dataflows.py

## make benchmark-scalesim: cycles per layer against SCALE-Sim's per-fold formulas, 8x8 and 4x4
## (benchmarks/scalesim.py, model only)
benchmark-scalesim: $(DEV_STAMP)
	$(BIN)/python benchmarks/scalesim.py

## make benchmark-floors: the MLPerf Tiny models' cycles against their compute, load and drain
## floors (benchmarks/floors.py, model only)
benchmark-floors: $(DEV_STAMP)
	$(BIN)/python benchmarks/floors.py

## make benchmark-mlperf: MLPerf Tiny models, golden vs TFLite Micro and RTL (benchmarks/mlperf_tiny.py)
benchmark-mlperf: $(DEV_STAMP)
	$(BIN)/python benchmarks/mlperf_tiny.py

## make benchmark-sim-speed: simulated cycles per second, with and without the per-layer check
## (digits, MobileNet-digits, MLPerf Tiny; benchmarks/sim_speed.py)
benchmark-sim-speed: $(DEV_STAMP)
	$(BIN)/python benchmarks/sim_speed.py

## make benchmark-onnx: golden model vs ONNX Runtime on QDQ models (benchmarks/onnx_agreement.py)
benchmark-onnx: $(DEV_STAMP)
	$(BIN)/python benchmarks/onnx_agreement.py

## make synth DEVICE=up5k|lfe5u-25f|lfe5u-85f: yosys + nextpnr, resources and Fmax
synth: $(STAMP)
	$(BIN)/cnnforge synth $(NET) --device $(DEVICE) --json build/synth/$(DEVICE).json

## make bitstream BOARD=icebreaker|ulx3s-85f|ulx3s-25f (ulx3s = ulx3s-85f): build/<board>/top.bin|bit
bitstream: $(STAMP)
	$(BIN)/cnnforge build $(NET) --board $(BOARD) --json build/bitstream-$(BOARD).json

## make flash BOARD=...: program the board with openFPGALoader (FLASH_ARGS=--dry-run to only print)
flash: $(STAMP)
	$(BIN)/cnnforge flash --board $(BOARD) $(FLASH_ARGS)

## make benchmark-synth: the synthesis table of the README (UP5K and LFE5U-85F, whole flow)
benchmark-synth: $(DEV_STAMP)
	$(BIN)/python benchmarks/synth.py

## make benchmark-fmax: Fmax over 3 placer seeds, critical paths, per device and model (benchmarks/fmax.py)
benchmark-fmax: $(DEV_STAMP)
	$(BIN)/python benchmarks/fmax.py

## make benchmark-boards: MLPerf Tiny bitstreams, model x board -> resources, Fmax, inferences/s
## (benchmarks/boards_mlperf.py)
benchmark-boards: $(DEV_STAMP)
	$(BIN)/python benchmarks/boards_mlperf.py

## make benchmark-icebreaker-kws: KWS on the whole iCEBreaker core in Verilator, weights from
## the SPI flash and over the UART, against TFLite Micro (benchmarks/icebreaker_kws.py)
benchmark-icebreaker-kws: $(DEV_STAMP)
	$(BIN)/python benchmarks/icebreaker_kws.py

clean:
	rm -rf build
