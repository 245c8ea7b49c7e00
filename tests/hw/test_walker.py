"""Im2col walker (``cnnforge.hw.rtl.walker.Im2colWalker``) in Amaranth's simulator against the
x-banked tile-buffer layout, cycle by cycle.

Reference: the layout of ``hw/rtl/accelerator.py`` and ``hw/rtl/walker.py``. Input (n, yi, xi)
of a tile lives in bank ``(xi // S) % C`` at word ``((n·Tr_in + yi)·S + xi % S)·Wq +
(xi // S) // C``; output column c of group g at kernel offset (ky, kx) reads
``xi = (g·C + c)·S + kx`` (bank ``(c + q) % C``, ``q = kx // S``) and output row r reads
``yi = r·sh + ky``. The layout constants (``Wq``, ``row_words``, ``fd_ky_step``,
``fd_chan_step``, ``fd_row_step``) are derived here as :func:`layout` from the layout itself
(the smallest ``Wq`` that keeps the banks' words apart) and checked against the compiler's
(:func:`cnnforge.hw.compiler.program.compile_network`) on real layers.

For every k = (n, ky, kx) in (n, ky, kx) row-major order, every bank's address must be the word
of the input the column on that bank needs (``c = (b − q) mod C``), and ``k``, ``ky``, ``kx``,
``q1`` must name k. Random stalls (``step`` low) must hold the walker; ``reset`` wins over a
``step`` in the same cycle.
"""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnforge.hw.frontend.network import Conv2d, Flatten, Linear, ReLU
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.walker import Im2colWalker
from tests.helpers import compile_tight, make_network

ADDR_WIDTH = 16
DESC = data.StructLayout({name: 16 for name in Im2colWalker.FIELDS})


def ceil_div(a, b):
    return -(-a // b)


def layout(C, S, sh, kh, kw, Tr, Tc):
    """The x-banked layout of a Tr × Tc output tile: input tile size, ``Wq`` (words per phase
    row of a bank: the columns xi // S of one phase, C per word) and the walker's steps."""
    Tr_in, Tc_in = (Tr - 1) * sh + kh, (Tc - 1) * S + kw
    Wq = ceil_div((Tc_in - 1) // S + 1, C)
    row_words = S * Wq                     # one input row (yi): S phases of Wq words
    return {"Tr_in": Tr_in, "Tc_in": Tc_in, "Wq": Wq, "row_words": row_words,
            "fd_ky_step": row_words,                           # next kernel row: next yi
            "fd_chan_step": (Tr_in - kh + 1) * row_words,      # from (n, kh−1) to (n + 1, 0)
            "fd_row_step": sh * row_words}                     # next output row: yi + sh


def bank_word(C, S, Wq, Tr_in, n, yi, xi):
    """The documented x-banked address of input (n, yi, xi) of a tile: (bank, word)."""
    return (xi // S) % C, ((n * Tr_in + yi) * S + xi % S) * Wq + (xi // S) // C


def expected_reads(C, S, Wq, Tr_in, sh, kh, kw, r, g, n0, base, k):
    """For step k of output row r, group g (channels from n0, half at word ``base``): the
    walker's outputs ``(k, ky, kx, q1, [addr of bank b])``."""
    n, rest = divmod(k, kh * kw)
    ky, kx = divmod(rest, kw)
    q = kx // S
    addrs = [None] * C
    for c in range(C):
        bank, word = bank_word(C, S, Wq, Tr_in, n0 + n, r * sh + ky, (g * C + c) * S + kx)
        assert bank == (c + q) % C                   # C columns, C distinct banks
        addrs[bank] = base + word
    return k, ky, kx, q % C, addrs


def rtl_walk(C, values, kh, kw, rowterm, off, steps, stalls, pre_steps=0, dw_rows=False,
             with_tap=False):
    """Reset the walker (with a ``step`` in the same cycle, after ``pre_steps`` steps of an
    earlier walk), then step it ``steps`` times, holding ``step`` low in the cycles where
    ``stalls`` (cycled, with a step after each pass through it) is true.

    Returns a list of ``(steps taken, (k, ky, kx, q1, addrs))`` for every cycle after the reset
    (``with_tap``: ``tap`` appended).
    """
    dut = Im2colWalker(C, ADDR_WIDTH, DESC, kh, kw, dw_rows=dw_rows)
    stalls = [bool(s) for s in stalls] + [False]
    seen = []

    def observe(ctx):
        seen = (ctx.get(dut.k), ctx.get(dut.ky), ctx.get(dut.kx), ctx.get(dut.q1),
                [ctx.get(dut.addr[b]) for b in range(C)])
        return seen + (ctx.get(dut.tap),) if with_tap else seen

    async def tb(ctx):
        for name, value in values.items():
            ctx.set(dut.desc[name], value)
        # an unrelated walk first, so the reset must clear every register
        ctx.set(dut.reset, 1)
        ctx.set(dut.reset_rowterm, 1234)
        ctx.set(dut.reset_off, 77)
        await ctx.tick()
        ctx.set(dut.reset, 0)
        ctx.set(dut.step, 1)
        for _ in range(pre_steps):
            await ctx.tick()
        ctx.set(dut.reset, 1)                 # reset and step together: reset wins
        ctx.set(dut.reset_rowterm, rowterm)
        ctx.set(dut.reset_off, off)
        await ctx.tick()
        ctx.set(dut.reset, 0)
        taken, cycle = 0, 0
        while taken <= steps:
            stall = stalls[cycle % len(stalls)]
            seen.append((taken, observe(ctx)))
            if taken == steps:
                break
            ctx.set(dut.step, 0 if stall else 1)
            await ctx.tick()
            taken += 0 if stall else 1
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


def check_walk(C, S, sh, kh, kw, N, Tr, Tc, r, g, n0=0, half=0, slot_words=None, stalls=(),
               pre_steps=0, ctor_k=None, lay=None):
    lay = lay or layout(C, S, sh, kh, kw, Tr, Tc)
    Tr_in, Wq = lay["Tr_in"], lay["Wq"]
    if slot_words is None:
        slot_words = (n0 + N) * Tr_in * lay["row_words"]
    base = half * slot_words
    values = {"last_walk_kw": kw - 1, "last_kh": kh - 1, "last_sw": S - 1, "Wq": Wq,
              "fd_ky_step": lay["fd_ky_step"], "fd_chan_step": lay["fd_chan_step"],
              "dw_rows": 0}
    rowterm = r * lay["fd_row_step"] + n0 * Tr_in * lay["row_words"]
    K = N * kh * kw
    kh_c, kw_c = ctor_k or (kh, kw)
    seen = rtl_walk(C, values, kh_c, kw_c, rowterm, base + g, K - 1, stalls, pre_steps)
    assert [t for t, _ in seen][-1] == K - 1
    for taken, got in seen:
        exp = expected_reads(C, S, Wq, Tr_in, sh, kh, kw, r, g, n0, base, taken)
        assert got == exp, (f"k={taken} (C={C} S={S} sh={sh} k={kh}x{kw} N={N} Tr={Tr} "
                            f"Tc={Tc} r={r} g={g} n0={n0} half={half}): got (k, ky, kx, q1, "
                            f"addrs) {got}, expected {exp}")
    return seen


# ------------------------------------------------------------------------------------------------
# The layout itself (what the walker's reference relies on)


@pytest.mark.parametrize("C, S, sh, kh, kw, Tr, Tc", [
    (1, 1, 1, 1, 1, 1, 1), (4, 1, 1, 3, 3, 2, 5), (3, 2, 2, 3, 3, 3, 4), (5, 3, 1, 4, 2, 2, 7),
    (2, 2, 2, 4, 4, 2, 2), (4, 3, 3, 1, 4, 1, 9),
])
def test_layout_is_a_bijection(C, S, sh, kh, kw, Tr, Tc):
    """Every input of a tile has its own (bank, word), inside the half's ``N·Tr_in·row_words``
    words: the layout the walker reads is well formed for the compiler's ``Wq``."""
    lay = layout(C, S, sh, kh, kw, Tr, Tc)
    N = 2
    places = {bank_word(C, S, lay["Wq"], lay["Tr_in"], n, yi, xi)
              for n in range(N) for yi in range(lay["Tr_in"]) for xi in range(lay["Tc_in"])}
    assert len(places) == N * lay["Tr_in"] * lay["Tc_in"]
    assert max(w for _, w in places) < N * lay["Tr_in"] * lay["row_words"]


# ------------------------------------------------------------------------------------------------
# Hand-picked walks


@pytest.mark.parametrize("C, S, sh, kh, kw, N, Tr, Tc, r, g", [
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 0),        # 1x1 kernel on a 1-column array: addr = k
    (4, 1, 1, 3, 3, 2, 2, 6, 1, 1),        # 3x3, second group (ragged), second row
    (3, 2, 2, 3, 3, 3, 3, 5, 2, 1),        # stride 2: two phases
    (2, 3, 1, 4, 4, 2, 1, 5, 0, 2),        # stride 3, kernel wider than the stride
    (5, 1, 1, 4, 4, 1, 1, 12, 0, 2),       # q = kx reaches C−1: every bank rotation
    (2, 1, 1, 1, 4, 1, 1, 4, 0, 1),        # q wraps past C (q0 = 1)
    (1, 2, 2, 2, 4, 3, 2, 3, 1, 2),        # one bank, two phases, q0 counts words
])
def test_hand_picked(C, S, sh, kh, kw, N, Tr, Tc, r, g):
    check_walk(C, S, sh, kh, kw, N, Tr, Tc, r, g)


def test_upper_half_and_channel_offset():
    """The second ping-pong half (``off = slot_words + g``) and a depthwise block's first
    channel n0 in ``rowterm``."""
    check_walk(3, 2, 1, 3, 3, 2, 2, 5, r=1, g=1, n0=3, half=1, slot_words=500)


def test_stalls_hold_every_output():
    """``step`` low holds k, ky, kx, q1 and every address (random stalls in every position)."""
    stalls = np.random.default_rng(1).integers(0, 2, 97).tolist()
    check_walk(3, 2, 1, 3, 4, 2, 2, 5, r=1, g=1, stalls=stalls)


@pytest.mark.parametrize("pre_steps", [0, 1, 5, 17])
def test_reset_wins_over_step(pre_steps):
    """A reset in the middle of a walk (phase, word rotation, row and channel advanced), with
    ``step`` high in the same cycle, starts the new walk at k = 0."""
    seen = check_walk(2, 2, 1, 3, 3, 2, 2, 4, r=1, g=1, pre_steps=pre_steps)
    assert seen[0][1][:4] == (0, 0, 0, 0)


def test_wider_counters_than_the_layer():
    """The network's largest kernel sets the counters' widths; a smaller layer wraps at its own
    ``last_kw`` / ``last_kh``."""
    check_walk(3, 1, 1, 2, 3, 3, 2, 4, r=1, g=1, ctor_k=(7, 7))


# ------------------------------------------------------------------------------------------------
# Random walks


@st.composite
def walks(draw):
    C, S, sh = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw, N = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    Tr, Tc = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    r, g = draw(st.integers(0, Tr - 1)), draw(st.integers(0, ceil_div(Tc, C) - 1))
    n0, half = draw(st.integers(0, 2)), draw(st.integers(0, 1))
    stalls = draw(st.lists(st.booleans(), max_size=8))
    return dict(C=C, S=S, sh=sh, kh=kh, kw=kw, N=N, Tr=Tr, Tc=Tc, r=r, g=g, n0=n0, half=half,
                stalls=stalls, pre_steps=draw(st.integers(0, 6)))


@settings(max_examples=300, deadline=None)
@given(walks())
def test_random_walks(case):
    """C 1..5, S 1..3, sh 1..3, kernels 1..4 × 1..4, N 1..3, any row, group, channel offset and
    half, random stalls: every bank address of every k equals the layout's word."""
    check_walk(**case)


# ------------------------------------------------------------------------------------------------
# Real layers: the compiler's descriptor values


def compiled_layers():
    """OR / IR layers (x-banked) of small real networks compiled for the smallest input buffer
    (several tiles): stride 1 and 2, padding 0 and 1, kernels 2 and 3, and a Winograd layer
    (4×4 patches at stride 2)."""
    cases = []
    for seed, (shape, conv, array, df, algorithm) in enumerate([
            ((3, 7, 9), Conv2d(3, 5, 3, stride=1, padding=1), (2, 3), "or", "direct"),
            ((2, 9, 7), Conv2d(2, 4, 3, stride=2, padding=1), (3, 2), "ir", "direct"),
            ((5, 6, 8), Conv2d(5, 3, 2, stride=2, padding=0), (4, 4), "or", "direct"),
            ((3, 6, 7), Conv2d(3, 2, 3, stride=1, padding=1), (2, 3), "or", "winograd")]):
        out = conv.output_shape(shape)
        net = make_network(shape, [conv, ReLU(), Flatten(), Linear(int(np.prod(out)), 3)],
                           seed + 40)
        program = compile_tight(quantize(net), *array, dataflow=df, algorithm=algorithm)
        cases.append((program, program.layers[0]))
    return cases


@pytest.mark.parametrize("index", range(4))
def test_compiled_layers(index):
    """The compiler's ``Wq``, ``row_words`` and feeder steps equal :func:`layout`'s, and the
    walker driven with the real descriptor walks the first and last group of the first and last
    row of a tile correctly."""
    program, layer = compiled_layers()[index]
    v = layer.values
    assert Dataflow(v["df"]) in (Dataflow.OR, Dataflow.IR, Dataflow.WINOGRAD)
    C = program.config.cols
    lay = layout(C, v["sw"], v["sh"], v["kh"], v["kw"], v["Tr"], v["Tc"])
    for name in ("Tr_in", "Tc_in", "Wq", "row_words", "fd_ky_step", "fd_chan_step",
                 "fd_row_step"):
        assert v[name] == lay[name], (name, v[name], lay[name])
    groups = v["groups_full"]
    for r in sorted({0, v["Tr"] - 1}):
        for g in sorted({0, groups - 1}):
            check_walk(C, v["sw"], v["sh"], v["kh"], v["kw"], v["N"], v["Tr"], v["Tc"], r, g,
                       half=1, slot_words=program.slot_words, lay=lay)


@pytest.mark.parametrize("C, kh, kw, Tc_in, rowterm, off", [
    (2, 3, 3, 7, 0, 0), (4, 3, 3, 12, 24, 4), (3, 1, 5, 9, 9, 303), (1, 2, 2, 5, 5, 1)])
@pytest.mark.parametrize("with_stalls", [False, True])
def test_depthwise_row_walk(C, kh, kw, Tc_in, rowterm, off, with_stalls):
    """The depthwise row mapping (``dw_rows``): kh input row segments of kw + C − 1 columns in
    the channel-banked layout, every bank at ``off + rowterm + ky·Tc_in + j``, q1 at 0, ``tap``
    while j < kw."""
    walk_kw = kw + C - 1
    values = {"last_walk_kw": walk_kw - 1, "last_kh": kh - 1, "last_sw": 0, "Wq": 0,
              "fd_ky_step": Tc_in, "fd_chan_step": 0, "dw_rows": 1, "last_kw": kw - 1}
    steps = kh * walk_kw - 1
    stalls = (1, 0, 1, 1) if with_stalls else ()
    seen = rtl_walk(C, values, kh, walk_kw, rowterm, off, steps, stalls, pre_steps=3,
                    dw_rows=True, with_tap=True)
    assert [t for t, _ in seen][-1] == steps
    for taken, got in seen:
        ky, j = divmod(taken, walk_kw)
        addr = off + rowterm + ky * Tc_in + j
        # tap: the segment column is one of the kernel's (its weight is read), else w_zero
        assert got == (taken, ky, j, 0, [addr] * C, int(j < kw)), (taken, got)
