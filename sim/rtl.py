"""Plain-function wrappers that run hardware blocks in Amaranth's simulator.

Each ``rtl_<block>(inputs, ...) -> ndarray`` elaborates the block, simulates it and returns what
it computed, so tests compare it with the golden model using ``np.array_equal``. They are meant
for unit tests of small cases (Amaranth's Python simulator runs a few thousand cycles per
second on the whole accelerator); the full network runs on Verilator through cocotb
(:mod:`cnnforge.sim.bench`).
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from cnnforge.hw.compiler.program import weight_image
from cnnforge.hw.rtl.accelerator import COUNTERS, Accelerator
from cnnforge.hw.rtl.pe_array import SystolicArray
from cnnforge.hw.rtl.ppu import PostProcessor

__all__ = ["rtl_gemm", "rtl_requantize", "rtl_accelerator", "split_debug_stream",
           "debug_stream_size"]


def rtl_gemm(weights, inputs, rows, cols, acc_width=32, bubbles=0, row_stream=None,
             product_registers=1):
    """``W @ X`` on a ``rows × cols`` :class:`SystolicArray`, passes back to back.

    Parameters
    ----------
    weights : ndarray, int8, shape (P, rows, K)
        P passes' weight blocks.
    inputs : ndarray, int8, shape (P, K, cols)
        Ignored with ``row_stream``.
    bubbles : int
        Idle beats appended to each pass (a pass lasts ``max(K + bubbles, R·C + 1)`` beats).
    row_stream : ndarray, int8, shape (P·beats + cols, rows), optional
        The row inputs of the depthwise row mapping (``x_from_rows`` high): ``row_stream[t, r]``
        at row r's edge in beat t of the run (passes back to back), so that PE (r, c) of pass
        p multiplies ``W[p, r, k]`` by ``row_stream[p·beats + k + c, r]``.
    product_registers : int
        The array's ``product_registers`` (1, 2 or 3).

    Returns
    -------
    ndarray, int64, shape (P, rows, cols): each pass's result, read during the drain window.
    """
    weights = np.asarray(weights)
    inputs = np.asarray(inputs)
    passes, _, k = weights.shape
    beats = max(k + bubbles, rows * cols + 1)
    dut = SystolicArray(rows, cols, acc_width, row_inputs=row_stream is not None,
                        product_registers=product_registers)
    out = np.zeros((passes, rows, cols), np.int64)

    async def drive(ctx):
        if row_stream is not None:
            ctx.set(dut.x_from_rows, 1)
        for p in range(passes):
            for s in range(beats):
                valid = s < k
                for r in range(rows):
                    ctx.set(dut.w_edge[r], int(weights[p, r, s]) if valid else 0)
                    if row_stream is not None:
                        ctx.set(dut.x_rows[r], int(row_stream[p * beats + s, r]))
                for c in range(cols):
                    ctx.set(dut.x_edge[c], int(inputs[p, s, c]) if valid else 0)
                ctx.set(dut.ctl_edge, {"valid": valid, "first": s == 0, "last": s == k - 1})
                await ctx.tick()
        ctx.set(dut.ctl_edge, {"valid": 0, "first": 0, "last": 0})
        if row_stream is not None:
            for t in range(passes * beats, len(row_stream)):
                for r in range(rows):
                    ctx.set(dut.x_rows[r], int(row_stream[t, r]))
                await ctx.tick()

    async def drain(ctx):
        for p in range(passes):
            # until() returns after the edge at which `done` was sampled high: the first drain
            # cycle; then one result per cycle, row-major, as the accelerator's drainer reads
            await ctx.tick().until(dut.done)
            for i in range(rows * cols):
                if i:
                    await ctx.tick()
                r, c = divmod(i, cols)
                out[p, r, c] = ctx.get(dut.results[r][c])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(drain)
    sim.run()
    return out


def rtl_requantize(acc, channels, params, zero_point, act_min, act_max, acc_width=32,
                   rounding="gemmlowp", interval=1, param_bank_words=0):
    """Run accumulators through the :class:`PostProcessor` (no pooling).

    Parameters
    ----------
    acc : ndarray, int, shape (T,)
    channels : ndarray, int, shape (T,)
        Parameter ROM address of each value.
    params : list of dict
        ``{"bias", "multiplier", "shift"}`` per channel.
    rounding : ``"gemmlowp"`` or ``"nearest-even"``
    interval : int
        The unit's ``interval``: one beat every 1 or 2 cycles (the cycles between held low).
    param_bank_words : int
        The unit's ``param_bank_words``: 0, or the parameter ROM in banks of that many words.

    Returns
    -------
    ndarray, int8, shape (T,): what the unit wrote at addresses 0..T−1.
    """
    acc = np.asarray(acc)
    n = len(acc)
    dut = PostProcessor(acc_width, params, max(1, (n - 1).bit_length()), rounding,
                        interval=interval, param_bank_words=param_bank_words)
    written = {}

    async def bench(ctx):
        ctx.set(dut.zero_point, zero_point)
        ctx.set(dut.act_min, act_min)
        ctx.set(dut.act_max, act_max)
        for t in range(interval * n + dut.latency + 1):
            i, gap = divmod(t, interval)
            if i < n and not gap:
                ctx.set(dut.valid, 1)
                ctx.set(dut.acc, int(acc[i]))
                ctx.set(dut.channel, int(channels[i]))
                ctx.set(dut.addr, i)
                ctx.set(dut.first, 1)
            else:                       # junk where no beat is valid
                ctx.set(dut.valid, 0)
                ctx.set(dut.acc, ~ctx.get(dut.acc))
                ctx.set(dut.channel, 0)
            if ctx.get(dut.wr_en):
                written[ctx.get(dut.wr_addr)] = ctx.get(dut.wr_data)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array([written[i] for i in range(n)], np.int8)


def debug_record_sizes(program):
    """Bytes of each layer's record in the debug stream: its counters and its output map."""
    return [4 * len(COUNTERS) + layer.values["out_size"] for layer in program.layers]


def debug_stream_size(program):
    """Bytes of the debug stream of one image: per layer the counters and the output map."""
    return sum(debug_record_sizes(program))


def split_debug_stream(program, data):
    """Split the accelerator's debug stream of one image into ``[(counters, ofm), ...]`` per
    layer: ``counters`` is a dict of :data:`~cnnforge.hw.rtl.accelerator.COUNTERS` (cycles, buffer
    reads and writes); ``ofm`` is int8 shaped as the layer's output (C, H, W) or (F,)."""
    data = bytes(data)
    layers, pos = [], 0
    for layer in program.layers:
        counters = {}
        for name in COUNTERS:
            counters[name] = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        size = layer.values["out_size"]
        ofm = np.frombuffer(data[pos:pos + size], np.int8).reshape(layer.ops[-1].output_shape)
        pos += size
        layers.append((counters, ofm))
    if pos != len(data):
        raise ValueError(f"debug stream has {len(data)} bytes, expected {pos}")
    return layers


def rtl_accelerator(program, images, *, debug=True, gaps=0.0, backpressure=0.0, seed=0,
                    max_cycles=2_000_000, vcd=None):
    """Run int8 images through the :class:`Accelerator` in Amaranth's simulator (with SPRAM
    weights, the weight image first).

    Parameters
    ----------
    program : Program
    images : ndarray, int8, shape (B, C, H, W)
    debug : bool
        Collect every layer's output map and cycle count.
    gaps, backpressure : float
        Probability that the producer pauses ``valid`` / the consumer drops ``ready`` in a cycle.
    vcd : path, optional
        Write a waveform of the whole simulation.

    Returns
    -------
    logits : ndarray, int8, shape (B, output_size)
    layers : list (per image) of list of (counters dict, ofm), empty without debug
    cycles : ndarray, int64, shape (B,): engine cycles per image (the ``cycles`` output)
    """
    rng = np.random.default_rng(seed)
    dut = Accelerator(program)
    images = np.asarray(images, np.int8)
    logits = np.zeros((len(images), program.output_size), np.int8)
    dumps = [bytearray() for _ in images]
    cycles = np.zeros(len(images), np.int64)
    state = {"image": 0, "done": False}

    async def send(ctx, port, values):
        for value in values:
            while gaps and rng.random() < gaps:
                ctx.set(port.valid, 0)
                await ctx.tick()
            ctx.set(port.valid, 1)
            ctx.set(port.payload, int(value))
            await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def producer(ctx):
        ctx.set(dut.debug, int(debug))
        if program.config.spram_weights:           # SPRAM weights: loaded before any image
            await send(ctx, dut.i_weights, weight_image(program))
            assert ctx.get(dut.weights_loaded)
        for b, image in enumerate(images):
            await send(ctx, dut.i_image, image.reshape(-1))
            while state["image"] == b:                 # wait for this image's logits
                await ctx.tick()

    async def consumer(ctx):
        count = 0
        for _ in range(max_cycles):
            ready = not (backpressure and rng.random() < backpressure)
            ctx.set(dut.o_logits.ready, ready)
            ctx.set(dut.o_debug.ready, ready)
            b = state["image"]
            if ready and ctx.get(dut.o_debug.valid):
                dumps[b].append(ctx.get(dut.o_debug.payload))
            if ready and ctx.get(dut.o_logits.valid):
                logits[b, count] = ctx.get(dut.o_logits.payload)
                count += 1
                if count == program.output_size:
                    cycles[b] = ctx.get(dut.cycles)
                    count = 0
                    state["image"] += 1
            await ctx.tick()
            if state["image"] == len(images):
                return
        raise TimeoutError(f"accelerator did not finish within {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    layers = [split_debug_stream(program, dump) for dump in dumps] if debug else []
    return logits, layers, cycles
