"""cocotb testbench of the generated accelerator Verilog (run by :mod:`cnnforge.sim.accel`).

The bench is data-driven: the Python side writes the stimulus (int8 images and options) to the
``.npz`` named by ``CNNFORGE_STIMULUS``; the bench streams every image in, collects the logits
stream, and with ``debug`` the per-layer debug stream, and writes them with the measured cycle
counts to ``CNNFORGE_RESULTS``. Progress (images done) is written to ``CNNFORGE_PROGRESS`` so the
caller can show a progress bar. Comparison with the golden model happens on the Python side, in
the same process that made the golden results.

Timing discipline: inputs are driven and handshakes sampled at the falling clock edge, when all
signals of the cycle have settled; a beat transfers at the rising edge that follows when valid
and ready were both high. Without back-pressure the consumer sleeps until a ``valid`` rises, so
Python stays off the per-cycle path while the engine computes.
"""

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge

CLOCK_NS = 10


async def _produce(dut, image, gaps, rng):
    """Stream one image into ``i_image`` (random pauses of ``valid`` with probability gaps)."""
    index = 0
    while index < len(image):
        await FallingEdge(dut.clk)
        if gaps and rng.random() < gaps:
            dut.i_image__valid.value = 0
            continue
        dut.i_image__valid.value = 1
        dut.i_image__payload.value = int(image[index])
        if dut.i_image__ready.value == 1:
            index += 1                          # transfers at the coming rising edge
    await FallingEdge(dut.clk)
    dut.i_image__valid.value = 0


async def _consume(dut, n_logits, n_debug, backpressure, rng):
    """Collect ``n_logits`` logits and ``n_debug`` debug bytes of one image."""
    logits, debug = [], []
    dut.o_logits__ready.value = 1
    dut.o_debug__ready.value = 1
    while len(logits) < n_logits or len(debug) < n_debug:
        await FallingEdge(dut.clk)
        if backpressure:
            ready = int(rng.random() >= backpressure)
            dut.o_logits__ready.value = ready
            dut.o_debug__ready.value = ready
            if not ready:
                continue
        got = False
        if dut.o_debug__valid.value == 1:
            debug.append(int(dut.o_debug__payload.value))
            got = True
        if dut.o_logits__valid.value == 1:
            logits.append(dut.o_logits__payload.value.to_signed())
            got = True
        if not got and not backpressure:
            await First(RisingEdge(dut.o_debug__valid), RisingEdge(dut.o_logits__valid))
    return logits, debug


@cocotb.test()
async def run_images(dut):
    """Every image of the stimulus file through the accelerator, results to the results file."""
    stim = np.load(os.environ["CNNFORGE_STIMULUS"])
    images = stim["images"].reshape(len(stim["images"]), -1)
    debug = int(stim["debug"])
    gaps, backpressure = float(stim["gaps"]), float(stim["backpressure"])
    n_logits, n_debug = int(stim["output_size"]), int(stim["debug_size"]) if debug else 0
    rng = random.Random(int(stim["seed"]))
    progress = os.environ.get("CNNFORGE_PROGRESS")

    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.debug.value = debug
    dut.i_image__valid.value = 0
    dut.o_logits__ready.value = 0
    dut.o_debug__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    logits = np.zeros((len(images), n_logits), np.int8)
    dumps = np.zeros((len(images), n_debug), np.uint8)
    cycles = np.zeros(len(images), np.int64)
    start_wall = time.perf_counter()
    start_cycles = int(get_sim_time("ns")) // CLOCK_NS
    for index, image in enumerate(images):
        consumer = cocotb.start_soon(_consume(dut, n_logits, n_debug, backpressure, rng))
        await _produce(dut, image, gaps, rng)
        got_logits, got_debug = await consumer
        logits[index] = got_logits
        dumps[index] = got_debug
        cycles[index] = int(dut.cycles.value)
        if progress:
            with open(progress + ".tmp", "w") as f:
                f.write(str(index + 1))
            os.replace(progress + ".tmp", progress)
    wall = time.perf_counter() - start_wall
    sim_cycles = int(get_sim_time("ns")) // CLOCK_NS - start_cycles
    np.savez(os.environ["CNNFORGE_RESULTS"], logits=logits, debug=dumps, cycles=cycles,
             sim_cycles=sim_cycles, wall_seconds=wall)
