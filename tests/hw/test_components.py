"""Small engine units in Amaranth's simulator, each against a Python reference of its contract.

* ``PingPong`` (``hw/rtl/common.py``): the registered truth ``full ← (full | set) & ~clr``.
* ``PerfCounters`` (``hw/rtl/sequencer.py``): a cycle model of its docstring (``cycles`` is 1
  after the start cycle and counts the running cycles; every other counter adds the events of a
  cycle one cycle late, the start cycle's dropped; ``clear`` zeroes all), on random control and
  event sequences, and the sequencer's START / KICK / RUN pattern summing every event.
* ``OutputDrainer`` (``hw/rtl/drain.py``): R × (c_last + 1) results per pass (its valid
  columns), row-major, one every 1 or 2 cycles from the cycle after ``take``, with
  ``ch = m0 + r``, ``ox = ox0 + c``, ``oy``, ``row_addr = out_base + r·PHW``, ``valid``
  cropped by ``M`` and ``x_end``, and ``passes_drained``.
* ``PartialSumBuffer`` (``hw/rtl/drain.py``): the column sums of a group's blocks, summed per
  (bank, word) (the first block writes), drained one per cycle in its documented order (IR:
  channel o outer, pixel i inner, from bank i word o; WR: channel m0 + o outer, pixel (row, col)
  inner, from bank o word row·cols + col) with its coordinates and cropping, the halves
  alternating and ``released`` as a modelled controller and metadata FIFO drive it.
* ``AddUnit`` (``hw/rtl/add.py``): every sum equals :func:`cnnforge.sim.golden.add_rescale` of
  both inputs, and requantized by :func:`cnnforge.sim.golden.requantize` it equals
  :func:`cnnforge.sim.golden.add_quantized`, on real compiled add layers whose inputs run
  through all 256 int8 values (every entry of both rescaling tables).
* ``WinogradInputTransform`` (``hw/rtl/winograd.py``): the 16 V words written per patch equal
  ``Bᵀ d B`` (:func:`cnnforge.sim.winograd.input_transform`), in ξ order at
  ``half·depth + 16·n + ξ``, for patches fed element by element in any order, with gaps.

Not tested here in isolation (they need the PE array's passes or the whole loop nest to drive
them meaningfully): ``Controller``, ``Sequencer`` and ``WinogradCompute``; the whole
accelerator covers them end to end (``tests/hw/test_accelerator.py``,
``tests/hw/test_dataflows.py``, ``tests/hw/test_winograd_hw.py``).
"""

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.network import Add, Conv2d, Flatten, Linear, ReLU
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.add import AddUnit
from cnnforge.hw.rtl.common import COUNTERS, PingPong, bits, descriptor_layout
from cnnforge.hw.rtl.drain import OutputDrainer, PartialSumBuffer
from cnnforge.hw.rtl.sequencer import PerfCounters
from cnnforge.hw.rtl.winograd import WinogradInputTransform
from cnnforge.sim.golden import add_quantized, add_rescale, requantize
from cnnforge.sim.winograd import input_transform
from tests.helpers import make_network, simulate


# ------------------------------------------------------------------------------------------------
# PingPong


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_ping_pong(steps):
    """``full`` is the registered ``(full | set) & ~clr`` (clear wins over set), from 0."""
    dut = PingPong()

    async def bench(ctx):
        full = 0
        for set_, clr in steps:
            assert ctx.get(dut.full) == full
            ctx.set(dut.set, set_)
            ctx.set(dut.clr, clr)
            await ctx.tick()
            full = (full | set_) & ~clr & 3
        assert ctx.get(dut.full) == full

    simulate(dut, bench)


def test_ping_pong_truth_table():
    """Every (full, set, clr) combination of one half, the other half independent."""
    dut = PingPong()

    async def bench(ctx):
        for full in (0, 1):
            for set_ in (0, 1):
                for clr in (0, 1):
                    # reach full = `full` on half 0 and its complement on half 1
                    ctx.set(dut.set, full | (1 - full) << 1)
                    ctx.set(dut.clr, (1 - full) | full << 1)
                    await ctx.tick()
                    assert ctx.get(dut.full) == full | (1 - full) << 1
                    ctx.set(dut.set, set_)
                    ctx.set(dut.clr, clr)
                    await ctx.tick()
                    assert ctx.get(dut.full) & 1 == int((full or set_) and not clr)
                    assert ctx.get(dut.full) >> 1 == 1 - full       # half 1 untouched

    simulate(dut, bench)


# ------------------------------------------------------------------------------------------------
# PerfCounters

EVENTS = {"ibuf_reads": 5, "ibuf_writes": 1, "fm_reads": 3, "obuf_writes": 16}


class PerfModel:
    """The cycle model of :class:`PerfCounters`' docstring: the registers and their update."""

    def __init__(self, events):
        self.events = events
        self.value = {name: 0 for name in COUNTERS}
        self.inc_q = {name: 0 for name in events}

    def step(self, clear, start, running, inc):
        value = dict(self.value)
        for name in self.events:
            value[name] = (value[name] + self.inc_q[name]) % (1 << 32)
            self.inc_q[name] = 0 if start else inc[name]
        if start:
            value["cycles"] = 1
        elif running:
            value["cycles"] = (value["cycles"] + 1) % (1 << 32)
        if clear:
            value = {name: 0 for name in COUNTERS}
        self.value = value


def run_counters(events, cycles):
    """``cycles``: [(clear, start, running, {name: increment})]; returns the counters after
    every cycle and the model's."""
    dut = PerfCounters(events)
    model = PerfModel(events)
    got, expected = [], []

    async def bench(ctx):
        for clear, start, running, inc in cycles:
            ctx.set(dut.clear, clear)
            ctx.set(dut.start, start)
            ctx.set(dut.running, running)
            for name in events:
                ctx.set(dut.events[name], inc[name])
            await ctx.tick()
            model.step(clear, start, running, inc)
            got.append([ctx.get(dut.counters[i]) for i in range(len(COUNTERS))])
            expected.append([model.value[name] for name in COUNTERS])

    simulate(dut, bench)
    return got, expected


@st.composite
def counter_cycles(draw):
    n = draw(st.integers(1, 60))
    return [(draw(st.booleans()) and draw(st.booleans()),     # clear: a quarter of the cycles
             draw(st.booleans()) and draw(st.booleans()),
             draw(st.booleans()),
             {name: draw(st.integers(0, most)) for name, most in EVENTS.items()})
            for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(counter_cycles())
def test_perf_counters_random(cycles):
    """Random clear / start / running / events, every cycle against the model; counters
    without a source stay 0."""
    got, expected = run_counters(EVENTS, cycles)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"after cycle {i} {cycles[i]}: got {dict(zip(COUNTERS, g))}, " \
                       f"expected {dict(zip(COUNTERS, e))}"
        for name in COUNTERS[1:]:
            if name not in EVENTS:
                assert g[COUNTERS.index(name)] == 0


@pytest.mark.parametrize("length", [1, 2, 17])
def test_perf_counters_layer(length):
    """The sequencer's pattern (START: clear; KICK: start; RUN: running, the units' events;
    then one cycle out of RUN): each counter holds the sum of the layer's events, ``cycles`` is
    the start cycle plus the running cycles. Events from before the clear and in the start
    cycle are not counted."""
    rng = np.random.default_rng(length)
    stale = {name: most for name, most in EVENTS.items()}
    zero = {name: 0 for name in EVENTS}
    run = [{name: int(rng.integers(0, most + 1)) for name, most in EVENTS.items()}
           for _ in range(length)]
    cycles = ([(0, 0, 1, stale), (1, 0, 0, zero), (0, 1, 0, stale)]
              + [(0, 0, 1, inc) for inc in run] + [(0, 0, 0, zero), (0, 0, 0, zero)])
    got, _ = run_counters(EVENTS, cycles)
    final = dict(zip(COUNTERS, got[-2]))
    assert final["cycles"] == 1 + length
    for name in EVENTS:
        assert final[name] == sum(inc[name] for inc in run), (name, final)
    assert got[-1] == got[-2]                   # nothing lands later


# ------------------------------------------------------------------------------------------------
# OutputDrainer

META = data.StructLayout({"m0": 8, "oy": 8, "ox0": 8, "x_end": 8, "rows": 4, "cols": 4,
                          "c_last": 2, "out_base": 12})
DRAIN_DESC = data.StructLayout({"M": 8, "PHW": 10})
ACC_WIDTH = 20


def drained_cols(meta, C, narrow):
    """The columns a pass drains: its valid ones (without narrow passes: all C)."""
    return meta["c_last"] + 1 if narrow else C


def rtl_drain(R, C, passes, M, PHW, gaps, restart_at=None, interval=1, narrow=True):
    """Drive ``take`` for each pass (meta, results) with ``gaps`` idle cycles after each drain,
    holding the pass's results only from ``take`` to its drain's end (garbage otherwise) and the
    meta only in the ``take`` cycle. Returns per cycle ``(out, row_addr, active, drained,
    events)`` and the cycles of the ``take`` pulses."""
    dut = OutputDrainer(R, C, ACC_WIDTH, META, DRAIN_DESC, 11, interval=interval, narrow=narrow)
    rng = np.random.default_rng(R * 10 + C)
    trace, takes = [], []
    lo, hi = -(1 << (ACC_WIDTH - 1)), 1 << (ACC_WIDTH - 1)

    def garbage(ctx):
        for r in range(R):
            for c in range(C):
                ctx.set(dut.results[r][c], int(rng.integers(lo, hi)))
        ctx.set(dut.meta, {name: int(rng.integers(0, 1 << Shape.cast(field.shape).width))
                           for name, field in META})

    def sample(ctx):
        out = ctx.get(dut.out)
        trace.append(((int(out.valid), int(out.acc), int(out.ch), int(out.oy), int(out.ox)),
                      ctx.get(dut.row_addr), ctx.get(dut.active), ctx.get(dut.passes_drained),
                      (ctx.get(dut.events.obuf_writes), ctx.get(dut.events.obuf_reads)),
                      ctx.get(dut.meta_take)))

    async def bench(ctx):
        ctx.set(dut.desc.M, M)
        ctx.set(dut.desc.PHW, PHW)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        garbage(ctx)
        for p, ((meta, results), gap) in enumerate(zip(passes, gaps)):
            for _ in range(gap):
                sample(ctx)
                await ctx.tick()
                garbage(ctx)
            if p == restart_at:
                ctx.set(dut.start, 1)
            ctx.set(dut.take, 1)
            ctx.set(dut.meta, meta)
            for r in range(R):
                for c in range(C):
                    ctx.set(dut.results[r][c], int(results[r, c]))
            takes.append(len(trace))
            sample(ctx)
            await ctx.tick()
            ctx.set(dut.take, 0)
            ctx.set(dut.start, 0)
            garbage(ctx)
            ctx.set(dut.meta, {name: 0 for name, _ in META})
            for r in range(R):                 # the PEs hold the results for I·R·cols cycles
                for c in range(C):
                    ctx.set(dut.results[r][c], int(results[r, c]))
            for _ in range(interval * R * drained_cols(meta, C, narrow)):
                sample(ctx)
                await ctx.tick()
            garbage(ctx)
        for _ in range(3):
            sample(ctx)
            await ctx.tick()

    simulate(dut, bench)
    return trace, takes


def check_drain(R, C, passes, M, PHW, gaps, restart_at=None, interval=1, narrow=True):
    trace, takes = rtl_drain(R, C, passes, M, PHW, gaps, restart_at, interval, narrow)
    I = interval
    drained = 0
    expected = {}         # cycle -> (out, row_addr, active, passes_drained, events, meta_take)
    for p, (t, (meta, results)) in enumerate(zip(takes, passes)):
        # the take cycle: nothing out yet, R·C result registers read at once
        expected[t] = ((0, None, None, None, None), None, 0,
                       None if p == restart_at else drained, (R * C, 0), 1)
        if p == restart_at:
            drained = 0
        cols = drained_cols(meta, C, narrow)     # the others skipped
        for i in range(R * cols):
            r, c = divmod(i, cols)
            ch, ox = meta["m0"] + r, meta["ox0"] + c
            valid = int(ch < M and ox < meta["x_end"])
            out = (valid, int(results[r, c]), ch, meta["oy"], ox)
            expected[t + 1 + I * i] = (out, meta["out_base"] + r * PHW, 1, drained, (0, 1), 0)
            for j in range(1, I):              # the result's later cycles: nothing out
                expected[t + 1 + I * i + j] = ((0, None, None, None, None), None, 1, drained,
                                               (0, 0), 0)
        drained += 1
        end = t + I * R * cols + 1
        if end < len(trace) and end not in takes:
            expected[end] = ((0, None, None, None, None), None, 0, drained, (0, 0), 0)
    names = ("out", "row_addr", "active", "passes_drained", "events", "meta_take")
    for cycle, got in enumerate(trace):
        exp = expected.get(cycle)
        if exp is None:                         # idle: no output, no events
            out, _, active, _, events, take = got
            assert (out[0], active, events, take) == (0, 0, (0, 0), 0), (cycle, got)
            continue
        for name, g, e in zip(names, got, exp):
            if isinstance(e, tuple):
                assert all(ei is None or gi == ei for gi, ei in zip(g, e)), (cycle, name, g, e)
            elif e is not None:
                assert g == e, (cycle, name, g, e)
    assert trace[-1][3] == drained % 256


def random_passes(rng, R, C, count, M, OW):
    passes = []
    for _ in range(count):
        meta = {"m0": int(rng.integers(0, M + R)), "oy": int(rng.integers(0, 200)),
                "ox0": int(rng.integers(0, OW + C)), "x_end": int(rng.integers(0, OW + 1)),
                "rows": int(rng.integers(0, 16)), "cols": int(rng.integers(0, 16)),
                "c_last": int(rng.integers(0, C)), "out_base": int(rng.integers(0, 2000))}
        results = rng.integers(-(1 << (ACC_WIDTH - 1)), 1 << (ACC_WIDTH - 1), (R, C))
        passes.append((meta, results))
    return passes


@pytest.mark.parametrize("narrow", [True, False])
@pytest.mark.parametrize("interval", [1, 2])
@pytest.mark.parametrize("R, C", [(1, 1), (2, 3), (3, 2), (4, 4)])
def test_output_drainer(R, C, interval, narrow):
    """Passes back to back (the next ``take`` in the cycle after a drain ends) and with gaps;
    channels past M and columns past ``x_end`` are not valid; the acc, coordinates and row
    address of every cycle match. With an ``interval`` of 2 a result every other cycle (the
    post-processor time-shares its multiplies)."""
    rng = np.random.default_rng(R * 7 + C)
    M, OW = 5, 7
    passes = random_passes(rng, R, C, 8, M, OW)
    passes[0][0].update(m0=0, ox0=0, x_end=OW, c_last=C - 1)   # every output valid
    gaps = [1, 0, 0, 3, 0, 1, 0, 2]
    check_drain(R, C, passes, M, PHW=37, gaps=gaps, interval=interval, narrow=narrow)


def test_output_drainer_restart():
    """``start`` (a new layer, in the cycle of its first ``take``) restarts ``passes_drained``."""
    rng = np.random.default_rng(3)
    passes = random_passes(rng, 2, 2, 5, 3, 4)
    check_drain(2, 2, passes, 3, PHW=12, gaps=[0, 0, 2, 0, 1], restart_at=3)


# ------------------------------------------------------------------------------------------------
# PartialSumBuffer

PSUM_DESC = data.StructLayout({"df": 3, "M": 8, "OW": 8})


def psum_groups(rng, C, df, M, count, kb, rows_cols=None):
    """``count`` groups of ``kb`` reduction blocks: per group its meta and the column sums of
    each beat, int (kb, beats, C). IR: a beat per channel (M); WR: a beat per pixel of the
    group's rows × cols."""
    groups = []
    for _ in range(count):
        rows, cols = rows_cols or (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        meta = {"m0": int(rng.integers(0, M + C)), "oy": int(rng.integers(0, 50)),
                "ox0": int(rng.integers(0, 12)), "x_end": int(rng.integers(0, 12)),
                "rows": rows, "cols": cols, "out_base": 0}
        beats = M if df == Dataflow.IR else rows * cols
        groups.append((meta, rng.integers(-(1 << 14), 1 << 14, (kb, beats, C))))
    return groups


def expected_psum_drain(C, df, M, OW, groups):
    """The drain of each group, in order: ``(valid, acc, ch, oy, ox)`` per cycle. The buffer
    word of beat j in bank c holds the sum over the blocks; IR drains (channel o, pixel i) from
    bank i, word o; WR (channel m0 + o, pixel (row, col)) from bank o, word row·cols + col."""
    out = []
    for meta, sums in groups:
        buf = sums.sum(axis=0)                      # (beats, C)
        if df == Dataflow.IR:
            for o in range(M):
                for i in range(C):
                    ox = meta["ox0"] + i
                    out.append((int(ox < meta["x_end"]), int(buf[o, i]), o, meta["oy"], ox))
        else:
            for o in range(C):
                for row in range(meta["rows"]):
                    for col in range(meta["cols"]):
                        ch, ox = meta["m0"] + o, meta["ox0"] + col
                        out.append((int(ch < M and ox < OW),
                                    int(buf[row * meta["cols"] + col, o]), ch,
                                    meta["oy"] + row, ox))
    return out


def rtl_psum(C, df, M, OW, groups, lmin, seed=0):
    """Stream each group's blocks into a :class:`PartialSumBuffer` as the array delivers them
    (``swap`` on a block's first beat, ``tail`` on its last real beat, ``first`` / ``last`` on
    the first / last block; a block lasts at least ``lmin`` beats, bubbles after the real
    ones), with a modelled controller (a group waits for its half of the buffer, its meta goes
    into a FIFO) and a random gap before each group. Returns the drained outputs (one per cycle
    after an ``active`` cycle), the ``released`` pulses, ``groups_drained`` and the summed
    events."""
    acc_width = 20
    dut = PartialSumBuffer(C, acc_width, 16, META, PSUM_DESC)
    rng = np.random.default_rng(seed)
    drained, released = [], []
    events = {"obuf_reads": 0, "obuf_writes": 0}
    final = {}

    def beats_of(sums):
        kb, beats, _ = sums.shape
        for b in range(kb):
            length = max(beats, lmin) + int(rng.integers(0, 3))
            for s in range(length):
                ctl = {"valid": int(s < beats), "swap": int(s == 0), "tail": int(s == beats - 1),
                       "first": int(b == 0), "last": int(b == kb - 1)}
                yield ctl, (sums[b, s] if s < beats else rng.integers(-99, 99, C))

    async def bench(ctx):
        ctx.set(dut.desc.df, df)
        ctx.set(dut.desc.M, M)
        ctx.set(dut.desc.OW, OW)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        full, half, fifo = [False, False], 0, []
        todo = list(groups)
        stream, wait = None, int(rng.integers(0, 4))
        was_active, idle, cycle = False, 0, 0
        while idle < 8:
            cycle += 1
            assert cycle < 5000, "the buffer does not drain"
            beat = next(stream, None) if stream is not None else None
            if beat is None:
                stream = None
                ctx.set(dut.psum_ctl, {"valid": 0, "swap": 0, "tail": 0, "first": 0, "last": 0})
                for c in range(C):
                    ctx.set(dut.psums[c], int(rng.integers(-99, 99)))
            else:
                ctx.set(dut.psum_ctl, beat[0])
                for c in range(C):
                    ctx.set(dut.psums[c], int(beat[1][c]))
            ctx.set(dut.meta_ready, int(bool(fifo)))
            ctx.set(dut.meta, fifo[0] if fifo else {name: 0 for name, _ in META})
            if was_active:
                out = ctx.get(dut.out)
                drained.append((int(out.valid), int(out.acc), int(out.ch), int(out.oy),
                                int(out.ox)))
            else:
                assert not ctx.get(dut.out.valid)
            rel = ctx.get(dut.released)
            if rel:
                released.append(rel)
            for name in events:
                events[name] += ctx.get(dut.events[name])
            take = ctx.get(dut.meta_take)
            was_active = ctx.get(dut.active)
            # the controller: issue the next group into a free half
            set_ = 0
            if stream is None and todo:
                if wait:
                    wait -= 1
                elif not full[half]:
                    meta, sums = todo.pop(0)
                    set_ = 1 << half
                    half ^= 1
                    fifo.append(meta)
                    stream, wait = beats_of(sums), int(rng.integers(0, 4))
            busy = stream is not None or todo or was_active or rel
            idle = 0 if busy else idle + 1
            await ctx.tick()
            if take:
                fifo.pop(0)
            full = [(full[h] or bool(set_ >> h & 1)) and not bool(rel >> h & 1)
                    for h in range(2)]
        final["groups_drained"] = ctx.get(dut.groups_drained)
        final["fifo"] = len(fifo)

    simulate(dut, bench)
    return drained, released, final, events


def check_psum(C, df, M, OW, groups, lmin, seed=0):
    drained, released, final, events = rtl_psum(C, df, M, OW, groups, lmin, seed)
    expected = expected_psum_drain(C, df, M, OW, groups)
    assert len(drained) == len(expected)
    for i, (got, exp) in enumerate(zip(drained, expected)):
        assert got == exp, f"drain cycle {i}: (valid, acc, ch, oy, ox) got {got}, expected {exp}"
    assert released == [0b01, 0b10] * (len(groups) // 2) + [0b01] * (len(groups) % 2)
    assert final == {"groups_drained": len(groups), "fifo": 0}
    beats = sum(sums.shape[0] * sums.shape[1] for _, sums in groups)
    first_beats = sum(sums.shape[1] for _, sums in groups)
    assert events == {"obuf_writes": C * beats,
                      "obuf_reads": C * (beats - first_beats) + len(expected)}


@pytest.mark.parametrize("C, M, kb", [(1, 1, 1), (2, 5, 3), (3, 2, 4), (4, 7, 2)])
def test_psum_buffer_ir(C, M, kb):
    """IR: M channels a block, KB blocks summed per group (the first block writes), drained
    (channel, pixel) with ``ox`` cropped at the group's ``x_end``; halves alternate."""
    rng = np.random.default_rng(C * 10 + M)
    groups = psum_groups(rng, C, Dataflow.IR, M, 5, kb)
    check_psum(C, Dataflow.IR, M, OW=9, groups=groups, lmin=C + 1, seed=C)


@pytest.mark.parametrize("C, M, kb", [(1, 2, 1), (2, 3, 2), (3, 4, 3), (4, 5, 1)])
def test_psum_buffer_wr(C, M, kb):
    """WR: one beat per pixel of the group's rows × cols, C channels a block, drained (channel,
    pixel), channels past M and columns past OW not valid."""
    rng = np.random.default_rng(C * 10 + M + 1)
    groups = psum_groups(rng, C, Dataflow.WR, M, 5, kb)
    check_psum(C, Dataflow.WR, M, OW=5, groups=groups, lmin=C + 1, seed=C + 1)


# ------------------------------------------------------------------------------------------------
# AddUnit


def add_program():
    """Conv → ReLU → Conv → Add(skip) → Add(image) → Linear on a 4×8×8 map: two add layers of
    256 elements each (tables at t_base 0 and 512)."""
    net = make_network((4, 8, 8), [Conv2d(4, 4, 1), ReLU(), Conv2d(4, 4, 1), Add(1), Add(-1),
                                   Flatten(), Linear(256, 3)], 11)
    program = compile_network(quantize(net), AcceleratorConfig(2, 2, algorithm="direct"))
    adds = [layer for layer in program.layers if layer.values["df"] == Dataflow.ADD]
    assert [layer.values["t_base"] for layer in adds] == [0, 512]
    return program


def rtl_add(program, layer, fm):
    """Run one layer through an :class:`AddUnit` with both feature-map ports answering one
    cycle later. Returns ``(sums by index, reads, events, cycles)``."""
    desc = descriptor_layout(program)
    fm_aw = bits(program.fm_depth - 1)
    dut = AddUnit(program.add_tables, program.fm_depth, fm_aw, program.acc_width, desc)
    sums, reads = [], []
    events = {"fm_reads": 0, "weight_reads": 0}
    cycles = [0]

    async def bench(ctx):
        for name in AddUnit.FIELDS:
            ctx.set(dut.desc[name], int(layer.values[name]))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        pending = (0, 0)
        while True:
            ctx.set(dut.fm_data_a, pending[0])
            ctx.set(dut.fm_data_b, pending[1])
            if ctx.get(dut.out_valid):
                sums.append((ctx.get(dut.index), ctx.get(dut.out_acc)))
            for name in events:
                events[name] += ctx.get(dut.events[name])
            pending = (0, 0)
            if ctx.get(dut.fm_en):
                a, b = ctx.get(dut.fm_addr_a), ctx.get(dut.fm_addr_b)
                reads.append((a, b))
                pending = (int(fm[a]), int(fm[b]))
            if not ctx.get(dut.busy):
                break
            await ctx.tick()
            cycles[0] += 1
            assert cycles[0] < 10_000

    simulate(dut, bench)
    return sums, reads, events, cycles[0]


def test_add_unit_every_table_entry():
    """Both add layers, each input running through all 256 int8 values (different orders):
    the sums equal the golden rescaled sum and requantize to the golden add; reads cover
    ``src + i`` and ``src2 + i`` once each; the sums come two cycles after their reads."""
    program = add_program()
    rng = np.random.default_rng(4)
    for layer in program.layers:
        v = layer.values
        if v["df"] != Dataflow.ADD:
            continue
        op = layer.ops[0]
        size = v["out_size"]
        assert size == 256
        fm = rng.integers(-128, 128, program.fm_depth).astype(np.int8)
        a = rng.permutation(np.arange(-128, 128)).astype(np.int8)
        b = rng.permutation(np.arange(-128, 128)).astype(np.int8)
        if v["src2"] == v["src"]:
            b = a
        fm[v["src"]:v["src"] + size] = a
        fm[v["src2"]:v["src2"] + size] = b
        sums, reads, events, cycles = rtl_add(program, layer, fm)
        assert reads == [(v["src"] + i, v["src2"] + i) for i in range(size)]
        assert [i for i, _ in sums] == list(range(size))
        got = np.array([s for _, s in sums], np.int64)
        exp = (add_rescale(a, op.input_zero_point, op.add_multiplier[0], op.add_shift[0])
               + add_rescale(b, op.input2_zero_point, op.add_multiplier[1], op.add_shift[1]))
        bad = np.flatnonzero(got != exp)
        assert bad.size == 0, [(int(a[i]), int(b[i]), int(got[i]), int(exp[i]))
                               for i in bad[:5]]
        # as a (1, size) batch: the golden requantizer takes a channel axis
        out = requantize(got[None], op.multiplier[0], op.shift[0], op.output_zero_point,
                         op.act_min, op.act_max, rounding=op.rounding)
        assert np.array_equal(out, add_quantized(a[None], b[None], op))
        assert events == {"fm_reads": 2 * size, "weight_reads": 2 * size}
        assert cycles == size + 2                  # the last sum two cycles after its read


def test_add_unit_idle_for_other_layers():
    """A non-add layer's start leaves the unit idle: no reads, no sums."""
    program = add_program()
    layer = program.layers[0]
    assert layer.values["df"] != Dataflow.ADD
    sums, reads, events, _ = rtl_add(program, layer, np.zeros(program.fm_depth, np.int8))
    assert sums == [] and reads == [] and events == {"fm_reads": 0, "weight_reads": 0}


# ------------------------------------------------------------------------------------------------
# WinogradInputTransform

X_WIDTH = 11


def rtl_input_transform(C, depth, patches, gaps, orders, seed=0):
    """Feed ``patches`` [(d (C, 4, 4) int8, n, half, group_last)] element by element in the
    given ``orders`` (a permutation of the 16 ij per patch), with ``gaps`` [per patch, per
    element] idle cycles before each element. Returns the writes ``[(cycle, addr, [data per
    column], v_set)]`` and the patches' last-element cycles."""
    dut = WinogradInputTransform(C, X_WIDTH, depth)
    rng = np.random.default_rng(seed)
    writes, lasts = [], []
    cycle = [0]

    def sample(ctx):
        if ctx.get(dut.v_en):
            writes.append((cycle[0], ctx.get(dut.v_addr),
                           [ctx.get(dut.v_data[c]) for c in range(C)], ctx.get(dut.v_set)))
        else:
            assert ctx.get(dut.v_set) == 0
        assert ctx.get(dut.events.ibuf_writes) == (C if ctx.get(dut.v_en) else 0)

    async def tick(ctx):
        sample(ctx)
        await ctx.tick()
        cycle[0] += 1

    async def bench(ctx):
        for (d, n, half, group_last), gap, order in zip(patches, gaps, orders):
            for e, ij in enumerate(order):
                for _ in range(gap[e]):
                    # not valid: every other field and the data are garbage
                    ctx.set(dut.patch, {"valid": 0, "first": int(rng.integers(2)),
                                        "last": int(rng.integers(2)), "ij": int(rng.integers(16)),
                                        "n": int(rng.integers(1 << 16)), "half": 1,
                                        "group_last": 1})
                    for c in range(C):
                        ctx.set(dut.data[c], int(rng.integers(-128, 128)))
                    await tick(ctx)
                ctx.set(dut.patch, {"valid": 1, "first": int(e == 0), "last": int(e == 15),
                                    "ij": ij, "n": n, "half": half, "group_last": group_last})
                for c in range(C):
                    ctx.set(dut.data[c], int(d[c, ij // 4, ij % 4]))
                if e == 15:
                    lasts.append(cycle[0])
                await tick(ctx)
        ctx.set(dut.patch, {"valid": 0})
        for _ in range(20):
            await tick(ctx)

    simulate(dut, bench)
    return writes, lasts


def check_input_transform(C, depth, patches, gaps, orders, seed=0):
    writes, lasts = rtl_input_transform(C, depth, patches, gaps, orders, seed)
    expected = []
    for (d, n, half, group_last), last in zip(patches, lasts):
        v = input_transform(d).reshape(C, 16)
        for xi in range(16):
            expected.append((last + 1 + xi, half * depth + 16 * n + xi,
                             [int(v[c, xi]) for c in range(C)],
                             (0b10 if half else 0b01) if group_last and xi == 15 else 0))
    assert len(writes) == len(expected)
    for got, exp in zip(writes, expected):
        assert got == exp, f"(cycle, addr, V per column, v_set): got {got}, expected {exp}"


def random_patch(rng, C, depth, kind="random"):
    if kind == "random":
        d = rng.integers(-128, 128, (C, 4, 4))
    elif kind == "min":
        d = np.full((C, 4, 4), -128)
    elif kind == "max":
        d = np.full((C, 4, 4), 127)
    else:     # the signs that maximise |V| at each position: ±128 in a checkerboard
        d = np.where((np.arange(4)[:, None] + np.arange(4)[None, :]) % 2, 127, -128)
        d = np.broadcast_to(d, (C, 4, 4))
    return (np.asarray(d, np.int64), int(rng.integers(0, depth // 16)), int(rng.integers(2)),
            int(rng.integers(2)))


@pytest.mark.parametrize("C", [1, 2, 5])
def test_input_transform_back_to_back(C):
    """Patches back to back in row-major element order (each patch's 16 writes overlap the
    next patch's reads), extreme patches included: V = Bᵀ d B, bit for bit, at the right
    words, ``v_set`` on the last write of a group's last patch."""
    rng = np.random.default_rng(C)
    depth = 16 * 3
    kinds = ["min", "max", "checker", "random", "random", "random"]
    patches = [random_patch(rng, C, depth, kind) for kind in kinds]
    patches[-1] = patches[-1][:3] + (1,)
    check_input_transform(C, depth, patches, [[0] * 16] * len(patches),
                          [list(range(16))] * len(patches))


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**32 - 1), st.booleans())
def test_input_transform_random(C, count, seed, gappy):
    """Random patches, element orders (any permutation of ij: the transform only adds) and idle
    cycles between elements."""
    rng = np.random.default_rng(seed)
    depth = 16 * 4
    patches = [random_patch(rng, C, depth) for _ in range(count)]
    orders = [rng.permutation(16).tolist() for _ in range(count)]
    gaps = [(rng.integers(0, 3, 16) * rng.integers(0, 2, 16) if gappy else np.zeros(16, int))
            .tolist() for _ in range(count)]
    check_input_transform(C, depth, patches, gaps, orders, seed)
