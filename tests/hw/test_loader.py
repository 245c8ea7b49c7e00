"""Tile loader (``cnnforge.hw.rtl.loader.TileLoader``) and input tile buffer
(``cnnforge.hw.rtl.tile_buffer.TileBuffer``) in Amaranth's simulator.

Reference for the loader: the documented input-tile-buffer layouts (``hw/rtl/accelerator.py``,
``hw/rtl/loader.py``), computed here in NumPy by :func:`expected_tiles` from the feature map
and the layer's geometry only (kernel, stride, padding, tile size; not the loader's address
steps). Tiles come in tile-row-major order into alternating ping-pong halves; input
(n, yi, xi) of tile (tr, tc) is the map's (n, tr·Tr·sh − ph + yi, tc·Tc·sw − pw + xi), or the
input zero point ``z_in`` outside the map (padding), and lives

* x-banked (OR, IR, Winograd): in bank ``(xi // S) % C`` at word
  ``((n·Tr_in + yi)·S + xi % S)·Wq + (xi // S) // C``;
* channel-banked (WR): in bank ``n % R`` at word ``(n // R)·Tr_in·Tc_in + yi·Tc_in + xi``.

The loader runs on the real descriptors of compiled networks (:func:`compile_network` with the
smallest input buffer the compiler accepts, so layers are cut into several tiles). The feature
map answers ``fm_addr`` one cycle later with random int8 data (every address of the memory
holds a different random value, so a wrong address shows). Every write is recorded; each tile
must be written exactly once per word, completely, with ``slot_set`` on its last write, and
(with a modelled controller that holds each filled half for a random time) never into a half
that is still full. The ``fm_reads`` / ``ibuf_writes`` events must count the in-map reads and
the writes.

Reference for the tile buffer: a dict of the words written; reads return the word one cycle
after the address, with a synchronous read port or (``lutram``) an asynchronous one behind a
registered address.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnforge.hw.frontend.network import Add, Conv2d, Flatten, Linear, ReLU
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import load_cycles, load_order
from cnnforge.hw.models.timing import fm_read_latency, tile_read_latency
from cnnforge.hw.rtl.common import bits, descriptor_layout, most_of
from cnnforge.hw.rtl.loader import TileLoader
from cnnforge.hw.rtl.tile_buffer import TileBuffer
from tests.helpers import compile_tight, make_network


def expected_tiles(program, layer, fm):
    """The tiles of ``layer`` as the documented layout puts them in one half of the buffer:
    a list of ``{(bank, word): value}``, in load order. ``fm`` is the whole feature memory."""
    v = layer.values
    df = Dataflow(v["df"])
    if df is Dataflow.ADD:
        return []
    R, C = program.config.rows, program.config.cols
    N, H, W = v["N"], v["H"], v["W"]
    # the geometry the loader sees (a Winograd layer: 4×4 patches at stride 2)
    kh, kw, sh, sw, ph, pw = (v[k] for k in ("kh", "kw", "sh", "sw", "ph", "pw"))
    Tr, Tc = v["Tr"], v["Tc"]
    Tr_in, Tc_in = (Tr - 1) * sh + kh, (Tc - 1) * sw + kw
    ntr, ntc = -(-v["OH"] // Tr), -(-v["OW"] // Tc)
    fmap = fm[v["src"]:v["src"] + N * H * W].reshape(N, H, W)
    Wq = -(-((Tc_in - 1) // sw + 1) // C)
    tiles = []
    for tr in range(ntr):
        for tc in range(ntc):
            y0, x0 = tr * Tr * sh - ph, tc * Tc * sw - pw
            tile = {}
            for n in range(N):
                for yi in range(Tr_in):
                    for xi in range(Tc_in):
                        y, x = y0 + yi, x0 + xi
                        inside = 0 <= y < H and 0 <= x < W
                        value = int(fmap[n, y, x]) if inside else v["z_in"]
                        if df is Dataflow.WR:
                            place = (n % R, (n // R) * Tr_in * Tc_in + yi * Tc_in + xi)
                        else:
                            place = ((xi // sw) % C,
                                     ((n * Tr_in + yi) * sw + xi % sw) * Wq + (xi // sw) // C)
                        assert place not in tile, "layout not one-to-one"
                        tile[place] = (value, inside)
            tiles.append(tile)
    return tiles


def rtl_load(program, fm, holds=None, seed=0):
    """Run every layer of ``program`` through a :class:`TileLoader`, one after another.

    ``holds``: ``None`` keeps ``slot_full`` at 0; otherwise a modelled controller marks a half
    full with ``slot_set`` (as the accelerator's ``PingPong``) and releases it after a random
    number of cycles in ``holds`` (a ``(low, high)`` pair).

    Returns per layer ``(tiles, events)``: the tiles as ``[(half, {(bank, word): value})]`` in
    the order their ``slot_set`` came, and the summed ``fm_reads`` / ``ibuf_writes`` events.
    """
    cfg = program.config
    R, C, NB = cfg.rows, cfg.cols, program.input_banks
    slot_words = program.slot_words
    bank_aw = bits(2 * slot_words - 1) + 1
    fm_aw = bits(program.fm_depth - 1)
    desc = descriptor_layout(program)
    lanes = cfg.loader_lanes
    dut = TileLoader(NB, R, C, slot_words, bank_aw, fm_aw, desc,
                     lambda *names: most_of(program, *names), lanes=lanes,
                     fm_latency=fm_read_latency(cfg.lutram_buffers))
    fields = TileLoader.FIELDS + (TileLoader.PAIR_FIELDS if lanes > 1 else ())
    ports = [(dut.fm_addr, dut.fm_data, dut.wr_en, dut.wr_bank, dut.wr_addr, dut.wr_data)]
    if lanes > 1:
        ports.append((dut.fm_addr1, dut.fm_data1, dut.wr1_en, dut.wr1_bank, dut.wr1_addr,
                      dut.wr1_data))
    rng = np.random.default_rng(seed)
    results = []

    async def tb(ctx):
        full = [False, False]
        release = [None, None]                 # cycle at which the controller frees a half
        cycle = 0
        for layer in program.layers:
            for name in fields:
                ctx.set(dut.desc[name], int(layer.values[name]))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycle += 1
            pending = [None] * lanes           # the feature map's reads in flight
            open_halves = [{}, {}]
            tiles, events = [], {"fm_reads": 0, "ibuf_writes": 0, "cycles": 0}
            idle = 0
            while idle < 4:                    # until done and the write pipeline is empty
                clr = [release[h] is not None and cycle >= release[h] for h in range(2)]
                ctx.set(dut.slot_full, sum(int(full[h]) << h for h in range(2)))
                banks = set()
                for lane, (fm_addr, fm_data, en, bank, addr, data) in enumerate(ports):
                    ctx.set(fm_data, pending[lane] if pending[lane] is not None else 0x55 - 256)
                    if not ctx.get(en):
                        continue
                    addr, bank = ctx.get(addr), ctx.get(bank)
                    half = int(addr >= slot_words)
                    assert not full[half], f"write into full half {half} (cycle {cycle})"
                    word = addr - half * slot_words
                    assert bank < NB and word < slot_words, (bank, addr)
                    assert bank not in banks, f"two writes to bank {bank} (cycle {cycle})"
                    banks.add(bank)
                    assert (bank, word) not in open_halves[half], (
                        f"layer {layer.name}: (bank, word) {(bank, word)} written twice")
                    open_halves[half][(bank, word)] = ctx.get(data)
                slot_set = ctx.get(dut.slot_set)
                for half in range(2):
                    if slot_set >> half & 1:
                        tiles.append((half, open_halves[half]))
                        open_halves[half] = {}
                        if holds is not None:
                            release[half] = cycle + 1 + int(rng.integers(*holds))
                for name in ("fm_reads", "ibuf_writes"):
                    events[name] += ctx.get(dut.events[name])
                pending = [None] * lanes
                if ctx.get(dut.fm_en):
                    events["cycles"] += 1
                    for lane, (fm_addr, *_) in enumerate(ports):
                        addr = ctx.get(fm_addr)
                        pending[lane] = int(fm[addr]) if addr < len(fm) else 0x55 - 256
                busy = ctx.get(dut.fm_en) or ctx.get(dut.wr_en) or not ctx.get(dut.done)
                idle = 0 if busy else idle + 1
                # the ping-pong flags: registered (full | set) & ~clr
                for h in range(2):
                    filled = holds is not None and bool(slot_set >> h & 1)
                    full[h] = (full[h] or filled) and not clr[h]
                    if clr[h]:
                        release[h] = None
                await ctx.tick()
                cycle += 1
                assert cycle < 100_000, "the loader does not finish"
            assert all(not half for half in open_halves), "writes after a tile's slot_set"
            results.append((tiles, events))
            # the controller has released every half when the layer ends
            full, release = [False, False], [None, None]
            ctx.set(dut.slot_full, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


def check_program(program, holds=None, seed=0):
    rng = np.random.default_rng(seed)
    fm = rng.integers(-128, 128, program.fm_depth).astype(np.int8)
    results = rtl_load(program, fm, holds, seed)
    for layer, (tiles, events) in zip(program.layers, results):
        v = layer.values
        expected = expected_tiles(program, layer, fm)
        where = (f"layer {layer.name} ({Dataflow(v['df']).name}, tiles {v['Tr']}x{v['Tc']}, "
                 f"{v['ntr']}x{v['ntc']})")
        assert len(tiles) == len(expected), (where, len(tiles), len(expected))
        for t, ((half, got), exp) in enumerate(zip(tiles, expected)):
            assert half == t % 2, (where, t, half)
            assert set(got) == set(exp), (
                f"{where}, tile {t}: missing {sorted(set(exp) - set(got))[:5]}, extra "
                f"{sorted(set(got) - set(exp))[:5]}")
            bad = [(p, got[p], exp[p][0]) for p in exp if got[p] != exp[p][0]]
            assert not bad, f"{where}, tile {t}: (bank, word), got, expected: {bad[:5]}"
        assert events["ibuf_writes"] == sum(len(t) for t in expected), where
        assert events["fm_reads"] == sum(inside for t in expected for _, inside in t.values()), \
            where
        # the loading cycles, as the cycle model has them
        loads = load_order(v) if Dataflow(v["df"]) is not Dataflow.ADD else []
        assert events["cycles"] == sum(load_cycles(v, load[-1]) for load in loads), where
    return results


# ------------------------------------------------------------------------------------------------
# Real layers


def conv_program(shape, conv, array, dataflow, algorithm="direct", seed=0, slack=1.0, lanes=1,
                 lutram=False):
    """Conv2d + ReLU + Flatten + Linear, compiled for the smallest buffer (times ``slack``),
    with ``lanes`` loader lanes (``lutram``: as the ECP5 designs, the feature map's data
    registered twice)."""
    out = conv.output_shape(shape)
    net = make_network(shape, [conv, ReLU(), Flatten(), Linear(int(np.prod(out)), 3)], seed)
    program = compile_tight(quantize(net), *array, slack=slack, dataflow=dataflow,
                            algorithm=algorithm, loader_lanes=lanes, lutram_buffers=lutram)
    assert Dataflow(program.layers[0].values["df"]).name.lower() == (
        "winograd" if algorithm == "winograd" else dataflow)
    return program


CASES = {
    # stride 1 padding 1, odd sizes, N = 3 on a 2×3 array
    "or-s1p1": ((3, 7, 9), Conv2d(3, 5, 3, stride=1, padding=1), (2, 3), "or"),
    # stride 2 padding 1, odd sizes
    "or-s2p1": ((2, 9, 7), Conv2d(2, 4, 3, stride=2, padding=1), (3, 2), "or"),
    # stride 2 padding 0, kernel 2, N = 5 on a 4×4 array
    "ir-k2s2p0": ((5, 6, 8), Conv2d(5, 3, 2, stride=2, padding=0), (4, 4), "ir"),
    "ir-s1p1": ((3, 5, 7), Conv2d(3, 2, 3, stride=1, padding=1), (2, 3), "ir"),
    # channel-banked: N = 5 on 3 rows (last bank block ragged), stride 2 padding 1
    "wr-s2p1": ((5, 7, 6), Conv2d(5, 4, 3, stride=2, padding=1), (3, 2), "wr"),
    "wr-s1p0": ((4, 5, 7), Conv2d(4, 3, 3, stride=1, padding=0), (2, 3), "wr"),
    # 1x1 kernel, no padding, 1-column array
    "or-k1": ((3, 3, 5), Conv2d(3, 2, 1), (2, 1), "or"),
}


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_real_layers(case, lanes):
    """Every layer (the conv and the Linear after it) of a network compiled for the smallest
    input buffer, with ``slot_full`` held at 0; one loader lane or two (x pairs on the
    x-banked layouts, channel pairs on the channel-banked one where R is even; one lane on a
    single bank, as on the 2×1 array)."""
    shape, conv, array, dataflow = CASES[case]
    program = conv_program(shape, conv, array, dataflow, seed=len(case), lanes=lanes)
    assert program.layers[0].values["ntr"] * program.layers[0].values["ntc"] > 1
    check_program(program)


@pytest.mark.parametrize("case, lanes, lutram", [("or-s2p1", 1, False), ("wr-s2p1", 1, True),
                                                 ("ir-k2s2p0", 1, False), ("or-s2p1", 2, True),
                                                 ("wr-s1p0", 2, False)])
def test_controller_holds_halves(case, lanes, lutram):
    """A controller that keeps each filled half for 0..60 cycles: the loader waits for a free
    half and never writes one that is full (one or two lanes, the feature map's data
    registered once or twice)."""
    shape, conv, array, dataflow = CASES[case]
    program = conv_program(shape, conv, array, dataflow, seed=3, lanes=lanes, lutram=lutram)
    check_program(program, holds=(0, 60), seed=5)


@pytest.mark.parametrize("lanes", [1, 2])
def test_winograd_layer(lanes):
    """A Winograd layer's 4×4 patches at stride 2 (x-banked), padding 1, odd sizes."""
    program = conv_program((3, 7, 5), Conv2d(3, 2, 3, padding=1), (2, 3), "or", "winograd",
                           lanes=lanes)
    check_program(program, holds=(0, 20), seed=2)


def test_add_layer_loads_nothing():
    """An element-wise add: ``done`` at once, no reads, no writes; the layers around it load."""
    net = make_network((2, 5, 5), [Conv2d(2, 2, 3, padding=1), ReLU(),
                                   Conv2d(2, 2, 3, padding=1), Add(1), Flatten(),
                                   Linear(50, 3)], 7)
    program = compile_tight(quantize(net), 2, 2)
    assert any(layer.values["df"] == Dataflow.ADD for layer in program.layers)
    results = check_program(program)
    for layer, (tiles, events) in zip(program.layers, results):
        if layer.values["df"] == Dataflow.ADD:
            assert tiles == [] and events == {"fm_reads": 0, "ibuf_writes": 0, "cycles": 0}


@st.composite
def conv_layers(draw):
    n, m = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    k, s, p = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
    h = draw(st.integers(max(2, k - 2 * p), 8))
    w = draw(st.integers(max(2, k - 2 * p), 8))
    array = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dataflow = draw(st.sampled_from(["or", "ir", "wr"]))
    slack = draw(st.sampled_from([1.0, 1.0, 1.7]))
    lanes, lutram = draw(st.sampled_from([1, 2])), draw(st.booleans())
    return (n, h, w), Conv2d(n, m, k, stride=s, padding=p), array, dataflow, slack, lanes, lutram


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_layers(), st.integers(0, 2**16), st.booleans())
def test_random_layers(case, seed, hold):
    """Random Conv2d geometry (kernel 1..3, stride 1..2, padding 0..1, sizes 2..8, 1..5
    channels), array 1..4 × 1..4, OR / IR / WR, tight or slack buffer, one or two loader lanes,
    the feature map's data registered once or twice, with or without a controller holding the
    halves."""
    shape, conv, array, dataflow, slack, lanes, lutram = case
    program = conv_program(shape, conv, array, dataflow, seed=seed, slack=slack, lanes=lanes,
                           lutram=lutram)
    check_program(program, holds=(0, 30) if hold else None, seed=seed)


# ------------------------------------------------------------------------------------------------
# The tile buffer


def rtl_tile_buffer(banks, depth, lutram, writes, reads, lanes=1):
    """Apply ``writes`` [(bank, addr, value)] one per cycle (``lanes`` = 2: per cycle a pair,
    lane 0's and lane 1's, either None for an idle lane), then issue ``reads`` [[addr per bank]]
    one set per cycle; returns the data of each read set, taken ``tile_read_latency(lutram)``
    cycles after its addresses."""
    aw = bits(depth - 1)
    dut = TileBuffer(banks, depth, aw, lutram, lanes=lanes)
    latency = tile_read_latency(lutram)
    assert dut.latency == latency
    ports = [(dut.wr_en, dut.wr_bank, dut.wr_addr, dut.wr_data)]
    if lanes > 1:
        ports.append((dut.wr1_en, dut.wr1_bank, dut.wr1_addr, dut.wr1_data))
    out = []

    async def tb(ctx):
        for cycle in writes:
            for port, write in zip(ports, cycle if lanes > 1 else [cycle]):
                if write is not None:
                    for signal, value in zip(port, (1, *write)):
                        ctx.set(signal, value)
            await ctx.tick()
            for port in ports:
                ctx.set(port[0], 0)
        for i, addrs in enumerate(reads + [None] * latency):
            if i >= latency:
                out.append([ctx.get(dut.rdata[b]) for b in range(banks)])
            if addrs is not None:
                for b in range(banks):
                    ctx.set(dut.raddr[b], addrs[b])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


@pytest.mark.parametrize("lutram", [False, True])
@pytest.mark.parametrize("banks, depth", [(1, 4), (3, 10), (5, 32)])
def test_tile_buffer(banks, depth, lutram):
    """Every bank holds its own words (a write goes to ``wr_bank`` only; later writes win);
    each bank reads its own address, the data one cycle later from block RAM and two from
    distributed RAM (``lutram``: registered address and output)."""
    rng = np.random.default_rng(banks * 100 + depth)
    writes = [(int(rng.integers(banks)), int(rng.integers(depth)), int(rng.integers(-128, 128)))
              for _ in range(3 * banks * depth)]
    model = {}
    for bank, addr, value in writes:
        model[bank, addr] = value
    reads = [[int(rng.integers(depth)) for _ in range(banks)] for _ in range(4 * depth)]
    got = rtl_tile_buffer(banks, depth, lutram, writes, reads)
    for addrs, words in zip(reads, got):
        assert words == [model.get((b, a), 0) for b, a in enumerate(addrs)], (addrs, words)


@pytest.mark.parametrize("lutram", [False, True])
def test_tile_buffer_two_lanes(lutram):
    """Two writes a cycle (the loader's two lanes) to two different banks, or one on either
    lane: both land, nothing else changes."""
    banks, depth = 4, 12
    rng = np.random.default_rng(7)
    writes, model = [], {}
    for _ in range(3 * banks * depth):
        cycle = [(int(b), int(rng.integers(depth)), int(rng.integers(-128, 128)))
                 for b in rng.choice(banks, 2, replace=False)]
        idle = int(rng.integers(4))            # 0, 1: that lane idle; else both write
        if idle < 2:
            cycle[idle] = None
        writes.append(cycle)
        for write in cycle:
            if write is not None:
                model[write[0], write[1]] = write[2]
    reads = [[int(rng.integers(depth)) for _ in range(banks)] for _ in range(2 * depth)]
    got = rtl_tile_buffer(banks, depth, lutram, writes, reads, lanes=2)
    for addrs, words in zip(reads, got):
        assert words == [model.get((b, a), 0) for b, a in enumerate(addrs)], (addrs, words)
