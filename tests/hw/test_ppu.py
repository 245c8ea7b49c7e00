"""Post-processing unit (``cnnforge.hw.rtl.ppu``): ``rtl_requantize`` against the golden
:func:`cnnforge.sim.golden.requantize`, bit for bit.

Contract of the unit (and of the compiler that fills its parameter ROM): per channel a bias,
``M0`` in [2^30, 2^31) or 0, and a right shift ``n`` in [0, 31]; ``|acc + bias| < 2^31``. Every
case runs with both requantizers (``rounding``: gemmlowp's double rounding, and one rounding with
ties to even) and at both intervals (a beat every cycle; every other cycle, the partial products
time-shared over two DSP blocks, with junk on the inputs between the beats).
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnnforge.hw.rtl.ppu import datapath_widths
from cnnforge.sim.golden import ROUNDINGS, requantize
from cnnforge.sim.rtl import rtl_requantize

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@pytest.fixture(params=ROUNDINGS)
def rounding(request):
    return request.param


def golden(acc, channels, params, zero_point, lo, hi, rounding):
    """The golden requantization of one value per beat, each with its own channel's params."""
    bias = np.array([p["bias"] for p in params], np.int64)[channels]
    mult = np.array([p["multiplier"] for p in params], np.int64)[channels]
    shift = np.array([p["shift"] for p in params], np.int64)[channels]
    x = np.asarray(acc, np.int64) + bias
    assert np.all(np.abs(x) < 1 << 31), "test case outside the contract"
    return requantize(x[None, :], mult, shift, zero_point, lo, hi, axis=1, rounding=rounding)[0]


def check(acc, channels, params, rounding, zero_point=0, lo=-128, hi=127, acc_width=32):
    acc = np.asarray(acc, np.int64)
    channels = np.asarray(channels, np.int64)
    expected = golden(acc, channels, params, zero_point, lo, hi, rounding)
    # a beat every cycle; every other (time-shared products); the parameter ROM in banks of two
    # words (the ECP5 designs' BankedMemory)
    for interval, bank_words in ((1, 0), (2, 0), (1, 2)):
        got = rtl_requantize(acc, channels, params, zero_point, lo, hi, acc_width=acc_width,
                             rounding=rounding, interval=interval, param_bank_words=bank_words)
        bad = np.flatnonzero(got != expected)
        assert bad.size == 0, f"interval {interval}, banks {bank_words}: " + "; ".join(
            f"acc={acc[i]} ch={channels[i]} {params[channels[i]]}: got {got[i]}, expected "
            f"{expected[i]}" for i in bad[:5])
    return got


def param(bias=0, multiplier=1 << 30, shift=0):
    assert multiplier == 0 or (1 << 30) <= multiplier < (1 << 31)
    assert 0 <= shift <= 31
    return {"bias": int(bias), "multiplier": int(multiplier), "shift": int(shift)}


# ------------------------------------------------------------------------------------------------
# Hand-picked cases


def test_nearest_even_ties_by_hand():
    """One rounding, ties to even, on both signs: (acc·2^30) / 2^31 = acc / 2 (shift 0) and
    acc / 16 (shift 3). gemmlowp rounds the same ties up in SRDHM (shift 0: −0.5 → 0) and away
    from zero in RoundingDivideByPOT (shift 3, where SRDHM is exact: −0.5 → −1)."""
    params = [param(multiplier=1 << 30, shift=0), param(multiplier=1 << 30, shift=3)]
    acc = [1, 3, 5, -1, -3, -5, 8, 24, -8, -24, 9, -9]
    channels = [0] * 6 + [1] * 6
    assert check(acc, channels, params, "nearest-even").tolist() == [
        0, 2, 2, 0, -2, -2, 0, 2, 0, -2, 1, -1]
    assert check(acc, channels, params, "gemmlowp").tolist() == [
        1, 2, 3, 0, -1, -2, 1, 2, -1, -2, 1, -1]


def test_ties_every_shift(rounding):
    """M0 = 2^30 halves (SRDHM rounds the odd values: ties) and RoundingDivideByPOT sees exact
    halves for acc = ±(2j + 1)·2^n (n < 30): both roundings' ties, both signs, every shift;
    with one rounding, the same values are ties of acc / 2^(n+1)."""
    params = [param(multiplier=1 << 30, shift=n) for n in range(32)]
    acc, channels = [], []
    for n in range(32):
        for j in (0, 1, 2, 5):
            for sign in (1, -1):
                v = sign * (2 * j + 1) << n if n < 30 else sign * (1 << n) // 2
                if abs(v) < 1 << 31:
                    acc.append(v)
                    channels.append(n)
        acc += [1, -1, 3, -3, 7, -7]                    # SRDHM ties
        channels += [n] * 6
    check(acc, channels, params, rounding, lo=-128, hi=127)


@pytest.mark.parametrize("zero_point", [-128, -5, 0, 17, 127])
def test_saturates_both_ends(zero_point, rounding):
    """Large accumulators with shift 0 saturate at −128 and 127, whatever the zero point."""
    params = [param(multiplier=(1 << 31) - 1, shift=0), param(multiplier=1 << 30, shift=3)]
    acc = [INT32_MAX, INT32_MIN + 1, 1000, -1000, 300, -300, 128, -129, 0, 255, -256]
    channels = [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    got = check(acc, channels, params, rounding, zero_point=zero_point)
    assert got[0] == 127 and got[1] == -128


def test_extreme_accumulators_with_bias(rounding):
    """|acc + bias| just below 2^31 from both sides, through a bias of either sign."""
    params = [param(bias=INT32_MAX, multiplier=(1 << 31) - 1, shift=31),
              param(bias=INT32_MIN + 1, multiplier=(1 << 31) - 1, shift=31),
              param(bias=-5, multiplier=1 << 30, shift=24)]
    acc = [0, -1, -INT32_MAX, 0, 1, INT32_MAX - 1, INT32_MAX - 5 - (1 << 23), 5 - INT32_MAX]
    channels = [0, 0, 0, 1, 1, 1, 2, 2]
    check(acc, channels, params, rounding)


def test_multiplier_zero_gives_zero_point(rounding):
    """A channel whose real multiplier underflowed (M0 = 0) outputs the zero point, clamped."""
    params = [param(multiplier=0, shift=0), param(multiplier=0, shift=31),
              param(bias=123456, multiplier=0, shift=7)]
    acc = [INT32_MAX, INT32_MIN + 1, 0, 12345, -99, 7]
    channels = [0, 0, 1, 1, 2, 2]
    for zp, lo, hi in [(0, -128, 127), (-128, -128, 127), (127, -128, 127), (40, 50, 60),
                       (70, 50, 60)]:
        got = check(acc, channels, params, rounding, zero_point=zp, lo=lo, hi=hi)
        assert np.all(got == min(max(zp, lo), hi))


@pytest.mark.parametrize("shift", [0, 1, 15, 30, 31])
def test_every_shift_extreme(shift, rounding):
    params = [param(multiplier=m, shift=shift) for m in (1 << 30, (1 << 30) + 1, (1 << 31) - 1)]
    acc = [INT32_MAX, INT32_MIN + 1, (1 << 30), -(1 << 30), 12345678, -12345678, 1, -1, 0]
    check(acc * 3, [0] * 9 + [1] * 9 + [2] * 9, params, rounding, zero_point=3)


@pytest.mark.parametrize("zero_point, lo, hi", [
    (-128, -128, 127),       # ReLU on an output range starting at 0: lo = zero point
    (-100, -100, 127),       # ReLU
    (-128, -128, -5),        # ReLU6 with 6 inside the range
    (-20, -20, 40),          # ReLU6
    (10, 10, 10),            # degenerate range
])
def test_activation_clamp(zero_point, lo, hi, rounding):
    rng = np.random.default_rng((lo + 128) * 256 + hi + 128)
    params = [param(multiplier=int(rng.integers(1 << 30, 1 << 31)), shift=int(s))
              for s in (0, 4, 8)]
    acc = rng.integers(-5000, 5000, 60)
    channels = rng.integers(0, 3, 60)
    got = check(acc, channels, params, rounding, zero_point=zero_point, lo=lo, hi=hi)
    assert got.min() == lo and got.max() == hi          # both bounds actually reached


def test_narrow_accumulator_sign_extends(rounding):
    """The accumulator input is only as wide as the compiler derives (here 22 bits for K = 72):
    negative values sign-extend into the 32-bit bias addition."""
    width = (72 * 128 * 127).bit_length() + 1
    params = [param(bias=-1000, multiplier=1 << 30, shift=2),
              param(bias=1 << 24, multiplier=(1 << 31) - 1, shift=20)]
    lim = 72 * 128 * 127
    acc = [lim, -lim, 0, -1, 1, lim - 1, -(lim - 1)]
    check(acc * 2, [0] * 7 + [1] * 7, params, rounding, acc_width=width)


def test_many_channels_one_rom(rounding):
    """Per-channel parameters are read from the ROM address of each beat (a layer's channels
    start at its ``ch_base`` inside a ROM shared by the whole network)."""
    rng = np.random.default_rng(5)
    params = [param(bias=int(rng.integers(-10**6, 10**6)),
                    multiplier=int(rng.integers(1 << 30, 1 << 31)), shift=int(rng.integers(0, 32)))
              for _ in range(37)]
    channels = rng.integers(0, 37, 200)
    acc = rng.integers(-(1 << 28), 1 << 28, 200)
    check(acc, channels, params, rounding, zero_point=-7)


# ------------------------------------------------------------------------------------------------
# Random cases


@st.composite
def requant_case(draw):
    nch = draw(st.integers(1, 6))
    params = []
    for _ in range(nch):
        mult = draw(st.one_of(st.just(0), st.just(1 << 30), st.just((1 << 31) - 1),
                              st.integers(1 << 30, (1 << 31) - 1)))
        params.append(param(bias=draw(st.integers(-(1 << 30), 1 << 30)), multiplier=mult,
                            shift=draw(st.integers(0, 31))))
    n = draw(st.integers(1, 40))
    channels = draw(st.lists(st.integers(0, nch - 1), min_size=n, max_size=n))
    acc = []
    for ch in channels:
        bias = params[ch]["bias"]
        magnitude = draw(st.sampled_from([1 << 8, 1 << 16, 1 << 24, INT32_MAX]))
        lo_, hi_ = max(-magnitude, INT32_MIN + 1 - bias), min(magnitude, INT32_MAX - bias)
        acc.append(draw(st.integers(lo_, hi_)))
    zero_point = draw(st.integers(-128, 127))
    lo = draw(st.sampled_from([-128, -128, zero_point, draw(st.integers(-128, 127))]))
    hi = draw(st.sampled_from([127, 127, draw(st.integers(lo, 127))]))
    return acc, channels, params, zero_point, lo, max(lo, hi)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@settings(max_examples=60, deadline=None)
@given(case=requant_case())
@example(case=([INT32_MAX - 1], [0], [param(bias=1, multiplier=(1 << 31) - 1, shift=0)], 0, -128,
          127))
@example(case=([INT32_MIN + 2], [0], [param(bias=-1, multiplier=(1 << 31) - 1, shift=0)], 0, -128,
          127))
def test_random(case, rounding):
    acc, channels, params, zero_point, lo, hi = case
    check(acc, channels, params, rounding, zero_point, lo, hi)


# ------------------------------------------------------------------------------------------------
# A network's datapath: as wide as its accumulators, biases and shifts


def test_datapath_widths():
    """``x = acc + bias`` over the accumulator's whole range and the biases' range (the MLPerf
    Tiny KWS model's figures: 20-bit accumulators, biases −239,531 … 157,975, shifts up to 9),
    at least 17 bits and at most int32's."""
    kws = [param(bias=-239531, shift=9), param(bias=157975, shift=3)]
    assert datapath_widths(20, kws) == (21, 9)
    assert datapath_widths(23, kws) == (24, 9)
    assert datapath_widths(23, [param(bias=-(1 << 22))]) == (24, 0)
    assert datapath_widths(23, [param(bias=-(1 << 22) - 1)]) == (25, 0)
    assert datapath_widths(8, [param(bias=3)]) == (17, 0)
    assert datapath_widths(32, [param(bias=1)]) == (32, 0)
    assert datapath_widths(22, [param(bias=1 << 24, shift=20)]) == (26, 20)


@st.composite
def narrow_case(draw):
    """Accumulators of ``acc_width`` bits (their extremes among them) and channels whose biases
    and shifts span less than int32's: the unit's datapath narrower than 32 bits."""
    acc_width = draw(st.integers(2, 30))
    bias_bits = draw(st.integers(0, 29))
    # biases near a centre: often all of one sign, or all beyond the accumulators' range
    centre = draw(st.integers(-(1 << bias_bits), 1 << bias_bits))
    spread = 1 << draw(st.integers(0, bias_bits))
    shift_max = draw(st.one_of(st.sampled_from([0, 1, 9, 24, 31]), st.integers(0, 31)))
    nch = draw(st.integers(1, 4))
    params = [param(bias=centre + draw(st.integers(-spread, spread)),
                    multiplier=draw(st.one_of(st.just(0), st.just((1 << 31) - 1),
                                              st.integers(1 << 30, (1 << 31) - 1))),
                    shift=draw(st.integers(0, shift_max)))
              for _ in range(nch)]
    params[0]["shift"] = shift_max
    lim = 1 << (acc_width - 1)
    n = draw(st.integers(1, 24))
    acc = draw(st.lists(st.one_of(st.sampled_from([-lim, lim - 1, 0, -1, 1]),
                                  st.integers(-lim, lim - 1)), min_size=n, max_size=n))
    channels = draw(st.lists(st.integers(0, nch - 1), min_size=n, max_size=n))
    return acc_width, acc, channels, params, draw(st.integers(-128, 127))


@pytest.mark.parametrize("rounding", ROUNDINGS)
@settings(max_examples=40, deadline=None)
@given(case=narrow_case())
@example(case=(22, [(1 << 21) - 1, -(1 << 21), 0], [0] * 3,
                [param(bias=1 << 24, multiplier=(1 << 31) - 1, shift=24)], 0))
def test_random_narrow_datapath(case, rounding):
    """The golden requantization, bit for bit, with the datapath :func:`datapath_widths` gives
    (``x`` from 17 to 32 bits, shifts from 0 to 31)."""
    acc_width, acc, channels, params, zero_point = case
    check(acc, channels, params, rounding, zero_point, acc_width=acc_width)


# ------------------------------------------------------------------------------------------------
# Pooling read-modify-write and its read count


@pytest.mark.parametrize("param_bank_words", [0, 1])
@pytest.mark.parametrize("hold_by_enable", [True, False])
@pytest.mark.parametrize("interval", [1, 2])
def test_pooling_max_and_read_enable(interval, hold_by_enable, param_bank_words):
    """Beats with ``first`` low write ``max(old, y)`` (back to back on one address, and every
    other cycle, too: the unit forwards its last four writes over the read-before-write port),
    and ``rd_en`` is high exactly once per such beat, ``latency − 4`` cycles after it entered
    (the engine counts its feature-map reads from it). With an ``interval`` of 2 the beats come
    every other cycle. Both forms of the running maximum's update (the compare on the
    register's enable, or in its data: iCE40) give the same writes, and so does a parameter
    ROM in banks (its longer read)."""
    from amaranth.sim import Simulator

    from cnnforge.hw.rtl.ppu import PostProcessor

    params = [param()]                       # y = round(acc / 2)
    #            (acc, addr, first): back to back on one window, then two windows interleaved,
    #            then three (a window's updates three cycles apart), then four
    beats = [(10, 0, 1), (30, 0, 0), (-50, 0, 0), (4, 1, 1), (8, 1, 0), (2, 1, 0), (6, 2, 1),
             (20, 3, 1), (2, 2, 0), (40, 3, 0), (12, 2, 0), (-2, 3, 0), (14, 2, 0),
             (8, 4, 1), (2, 5, 1), (-6, 6, 1), (12, 4, 0), (0, 5, 0), (-2, 6, 0), (4, 4, 0),
             (6, 7, 1), (4, 8, 1), (2, 9, 1), (8, 10, 1), (10, 7, 0), (-4, 8, 0), (6, 9, 0),
             (2, 10, 0), (4, 7, 0),
             # four back to back, the third below the maximum so far (it must hold for the
             # fourth)
             (2, 11, 1), (8, 11, 0), (-4, 11, 0), (6, 11, 0)]
    dut = PostProcessor(16, params, 4, interval=interval, hold_by_enable=hold_by_enable,
                        param_bank_words=param_bank_words)
    fm, reads, read_cycles = {}, [], []

    async def bench(ctx):
        ctx.set(dut.act_min, -128)
        ctx.set(dut.act_max, 127)
        for t in range(interval * len(beats) + dut.latency + 2):
            i, gap = divmod(t, interval)
            if i < len(beats) and not gap:
                acc, addr, first = beats[i]
                ctx.set(dut.valid, 1)
                ctx.set(dut.acc, acc)
                ctx.set(dut.addr, addr)
                ctx.set(dut.first, first)
            else:
                ctx.set(dut.valid, 0)
            # the feature map: a synchronous read port, read before write
            rd, write = ctx.get(dut.rd_addr), None
            if ctx.get(dut.rd_en):
                read_cycles.append(t)
                reads.append(rd)
            if ctx.get(dut.wr_en):
                write = (ctx.get(dut.wr_addr), ctx.get(dut.wr_data))
            old = fm.get(rd, 120)             # (stale: never a window's value)
            await ctx.tick()
            if write is not None:
                fm[write[0]] = write[1]
            ctx.set(dut.rd_data, old)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert fm == {0: 15, 1: 4, 2: 7, 3: 20, 4: 6, 5: 1, 6: -1, 7: 5, 8: 2, 9: 3, 10: 4, 11: 4}
    not_first = [t for t, (_, _, first) in enumerate(beats) if not first]
    assert read_cycles == [interval * t + dut.latency - 4 for t in not_first]
    assert reads == [beats[t][1] for t in not_first]
