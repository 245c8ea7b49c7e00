"""cocotb testbench of the generated accelerator Verilog (run by :mod:`cnnforge.sim.accel`).

The bench is data-driven: the Python side writes the stimulus (int8 images and options) to the
``.npz`` named by ``CNNFORGE_STIMULUS``; the bench streams every image in, collects the logits
stream, and with ``debug`` the per-layer debug stream, and writes them with the measured cycle
counts to ``CNNFORGE_RESULTS``. Progress (images done) is written to ``CNNFORGE_PROGRESS`` so the
caller can show a progress bar. Comparison with the golden model happens on the Python side, in
the same process that made the golden results.

Watchdog: when no beat moves on the input or the output streams for ``timeout_cycles`` (the
stimulus gives it from the performance model), the bench stops and writes what it has, with the
image, the stream and the debug bytes received so far (``stalled_*``); the caller names the
layer that stalled. The bench never waits for ever.

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
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

CLOCK_NS = 10


class Stall(Exception):
    """No beat moved on a stream for the watchdog's number of cycles."""


def _cycle(dut):
    return int(get_sim_time("ns")) // CLOCK_NS


async def _produce(dut, image, gaps, rng, timeout):
    """Stream one image into ``i_image`` (random pauses of ``valid`` with probability gaps);
    raise :class:`Stall` when the accelerator takes no byte for ``timeout`` cycles."""
    index, idle = 0, 0                          # cycles since the last byte was taken
    while index < len(image):
        await FallingEdge(dut.clk)
        idle += 1
        if idle > timeout:
            raise Stall("input")
        if gaps and rng.random() < gaps:
            dut.i_image__valid.value = 0
            continue
        dut.i_image__valid.value = 1
        dut.i_image__payload.value = int(image[index])
        if dut.i_image__ready.value == 1:
            index += 1                          # transfers at the coming rising edge
            idle = 0
    await FallingEdge(dut.clk)
    dut.i_image__valid.value = 0


async def _consume(dut, n_logits, n_debug, backpressure, rng, timeout, stall_after, got):
    """Collect ``n_logits`` logits and ``n_debug`` debug bytes of one image into ``got``
    (``{"logits": [], "debug": []}``); when no beat arrives for ``timeout`` cycles, stop and set
    ``got["stall"]``. ``stall_after`` (tests only): stop taking beats after that many, for
    good."""
    try:
        await _collect(dut, n_logits, n_debug, backpressure, rng, timeout, stall_after, got)
    except Stall as exc:
        got["stall"] = str(exc)


async def _collect(dut, n_logits, n_debug, backpressure, rng, timeout, stall_after, got):
    logits, debug = got["logits"], got["debug"]
    dut.o_logits__ready.value = 1
    dut.o_debug__ready.value = 1
    idle = 0                                    # cycles since the last beat
    while len(logits) < n_logits or len(debug) < n_debug:
        await FallingEdge(dut.clk)
        idle += 1
        if idle > timeout:
            raise Stall("output")
        if 0 <= stall_after <= len(logits) + len(debug):
            dut.o_logits__ready.value = dut.o_debug__ready.value = 0
            continue
        if backpressure:
            ready = int(rng.random() >= backpressure)
            dut.o_logits__ready.value = ready
            dut.o_debug__ready.value = ready
            if not ready:
                continue
        moved = False
        if dut.o_debug__valid.value == 1:
            debug.append(int(dut.o_debug__payload.value))
            moved = True
        if dut.o_logits__valid.value == 1:
            logits.append(dut.o_logits__payload.value.to_signed())
            moved = True
        if moved:
            idle = 0
        elif not backpressure:                  # sleep until a valid rises (or the watchdog)
            start = _cycle(dut)
            await First(RisingEdge(dut.o_debug__valid), RisingEdge(dut.o_logits__valid),
                        Timer((timeout + 1) * CLOCK_NS, "ns"))
            idle += _cycle(dut) - start


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
    timeout, stall_after = int(stim["timeout_cycles"]), int(stim["stall_after"])
    stalled = {}
    for index, image in enumerate(images):
        got = {"logits": [], "debug": []}
        consumer = cocotb.start_soon(_consume(dut, n_logits, n_debug, backpressure, rng,
                                              timeout, stall_after, got))
        try:
            await _produce(dut, image, gaps, rng, timeout)
            await consumer
        except Stall as exc:
            if not consumer.done():
                consumer.cancel()
            got["stall"] = str(exc)
        if "stall" in got:
            stalled = {"stalled_image": index, "stalled_stream": got["stall"],
                       "stalled_debug": np.array(got["debug"], np.uint8),
                       "stalled_logits": len(got["logits"]), "stalled_cycle": _cycle(dut)}
            break
        logits[index] = got["logits"]
        dumps[index] = got["debug"]
        cycles[index] = int(dut.cycles.value)
        if progress:
            with open(progress + ".tmp", "w") as f:
                f.write(str(index + 1))
            os.replace(progress + ".tmp", progress)
    wall = time.perf_counter() - start_wall
    sim_cycles = int(get_sim_time("ns")) // CLOCK_NS - start_cycles
    np.savez(os.environ["CNNFORGE_RESULTS"], logits=logits, debug=dumps, cycles=cycles,
             sim_cycles=sim_cycles, wall_seconds=wall, **stalled)
