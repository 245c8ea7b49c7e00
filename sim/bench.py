"""cocotb testbench of the generated accelerator in its simulation harness (run by
:mod:`cnnforge.sim.accel`).

The bench is data-driven: the Python side writes the stimulus (int8 images and options) to the
``.npz`` named by ``CNNFORGE_STIMULUS``; the bench runs the images through the
:class:`~cnnforge.sim.harness.SimHarness` batch by batch and writes the logits, the per-layer
debug records (with ``debug``) and the measured cycle counts to ``CNNFORGE_RESULTS``. Progress
(images done) is written to ``CNNFORGE_PROGRESS`` after every batch so the caller can show a
progress bar. Comparison with the golden model happens on the Python side, in the same process
that made the golden results.

Python stays off the per-cycle path: the clock runs in the HDL (``sim_top``), the harness
streams the images in and collects the outputs, so per batch the bench writes the image memory
through memory handles (one :data:`~cnnforge.sim.harness.WORD_BYTES`-byte word per access),
sets the run's registers, awaits one value change of ``served`` and reads the result memories.

Stream options keep their per-cycle meaning, now applied by the harness's random source and
sink: ``gaps`` is the probability that a cycle has no ``valid`` on ``i_image``,
``backpressure`` the probability that it has no ``ready`` on the outputs; ``seed`` and the
image's number in the whole stream (``first_image``, the first image of this process's part,
plus its place in the part) seed them, so a run split over several processes moves every beat
as one process does.

Watchdog: when no beat moves on any stream for ``timeout_cycles`` (the stimulus gives it from
the performance model), the harness ends the run as stalled; the bench writes what it has, with
the image, the stream and the debug bytes received so far (``stalled_*``); the caller names the
layer that stalled. The bench never waits for ever.
"""

import os
import time

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time

from cnnforge.sim.harness import CLOCK_NS, NEVER, WORD_BYTES, probability_threshold


def _write_bytes(memory, data):
    """Write ``data`` (bytes) into ``memory`` from word 0, :data:`WORD_BYTES` per word, little
    endian (byte ``i`` in lane ``i % WORD_BYTES``)."""
    data = bytes(data) + bytes(-len(data) % WORD_BYTES)
    for word in range(len(data) // WORD_BYTES):
        memory[word].value = int.from_bytes(data[word * WORD_BYTES:(word + 1) * WORD_BYTES],
                                            "little")


def _read_bytes(memory, start, size):
    """``size`` bytes of ``memory`` from byte ``start`` (as written by :func:`_write_bytes`)."""
    if size <= 0:
        return b""
    first, last = start // WORD_BYTES, (start + size - 1) // WORD_BYTES
    data = b"".join(memory[word].value.to_unsigned().to_bytes(WORD_BYTES, "little")
                    for word in range(first, last + 1))
    offset = start - first * WORD_BYTES
    return data[offset:offset + size]


def _write_progress(path, done):
    with open(path + ".tmp", "w") as f:
        f.write(str(done))
    os.replace(path + ".tmp", path)


@cocotb.test()
async def run_images(dut):
    """Every image of the stimulus file through the harness, results to the results file."""
    stim = np.load(os.environ["CNNFORGE_STIMULUS"])
    images = stim["images"]
    images = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.int8)
    debug = int(stim["debug"])
    n_logits, n_debug = int(stim["output_size"]), int(stim["debug_size"]) if debug else 0
    batch, part_first = int(stim["batch"]), int(stim["first_image"])
    stall_after = int(stim["stall_after"])
    progress = os.environ.get("CNNFORGE_PROGRESS")
    harness = dut.harness
    image_mem, logits_mem = harness.image_mem, harness.logits_mem
    debug_mem, cycles_mem = harness.debug_mem, harness.cycles_mem

    dut.debug.value = debug
    dut.seed.value = int(stim["seed"]) & 0xFFFFFFFF
    dut.gap_threshold.value = probability_threshold(float(stim["gaps"]))
    dut.ready_threshold.value = probability_threshold(float(stim["backpressure"]))
    dut.stall_after.value = NEVER if stall_after < 0 else stall_after
    dut.timeout.value = int(stim["timeout_cycles"])
    for port in ("repeat_beat", "drop_beat"):                # tests of the checker only
        beat = int(stim[port]) if port in stim.files else -1
        getattr(dut, port).value = NEVER if beat < 0 else beat

    logits = np.zeros((len(images), n_logits), np.int8)
    dumps = np.zeros((len(images), n_debug), np.uint8)
    cycles = np.zeros(len(images), np.int64)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    start_cycles = int(get_sim_time("ns")) // CLOCK_NS
    stalled = {}
    for number, first in enumerate(range(0, len(images), batch)):
        chunk = images[first:first + batch]
        _write_bytes(image_mem, chunk.tobytes())
        dut.count.value = len(chunk)
        dut.first_image.value = part_first + first
        dut.request.value = (number + 1) & 0xFF
        await dut.served.value_change
        done = int(dut.image.value) if int(dut.stalled.value) else len(chunk)
        if done:
            logits[first:first + done] = np.frombuffer(
                _read_bytes(logits_mem, 0, done * n_logits), np.int8).reshape(done, n_logits)
            dumps[first:first + done] = np.frombuffer(
                _read_bytes(debug_mem, 0, done * n_debug), np.uint8).reshape(done, n_debug)
            cycles[first:first + done] = [cycles_mem[i].value.to_unsigned()
                                          for i in range(done)]
        if int(dut.stalled.value):
            received = int(dut.debug_taken.value)
            stalled = {"stalled_image": first + done,
                       "stalled_stream": "input" if int(dut.stalled_input.value) else "output",
                       "stalled_debug": np.frombuffer(_read_bytes(
                           debug_mem, done * n_debug, received), np.uint8),
                       "stalled_logits": int(dut.logits_taken.value),
                       "stalled_cycle": int(get_sim_time("ns")) // CLOCK_NS}
            break
        if progress:
            _write_progress(progress, first + done)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    sim_cycles = int(get_sim_time("ns")) // CLOCK_NS - start_cycles
    np.savez(os.environ["CNNFORGE_RESULTS"], logits=logits, debug=dumps, cycles=cycles,
             sim_cycles=sim_cycles, wall_seconds=wall, cpu_seconds=cpu,
             **stalled)
