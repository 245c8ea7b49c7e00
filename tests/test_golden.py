"""Golden model (``cnnforge.sim.golden``) against independent references.

The references here are written for clarity, not speed: nested Python loops for the
convolution, linear and pooling ops, and a line-by-line Python-int transcription of gemmlowp's
``fixedpoint.h`` for the fixed-point primitives (Python ints never overflow, so the transcription
models C's int64 arithmetic exactly as long as the values stay in range, which is asserted).
"""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cnnforge.sim.golden import (
    INT32_MAX, INT32_MIN, conv2d_acc, conv2d_float, linear_acc, linear_float, max_pool2d,
    requantize, rounding_divide_by_pot, srdhm,
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------
# Independent references


def naive_conv2d(x, w, b, stride, padding, pad_value):
    """Direct convolution (cross-correlation) with explicit bounds checks instead of padding.

    Works for float (accumulates in Python floats) and integer inputs (Python ints, exact).
    Returns a nested list [B][M][OH][OW]."""
    bsz, n, h, wd = x.shape
    m, n2, kh, kw = w.shape
    assert n == n2
    (sh, sw), (ph, pw) = stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (wd + 2 * pw - kw) // sw + 1
    xl, wl = x.tolist(), w.tolist()
    bl = None if b is None else b.tolist()
    out = [[[[0] * ow for _ in range(oh)] for _ in range(m)] for _ in range(bsz)]
    for bi in range(bsz):
        for mi in range(m):
            for oy in range(oh):
                for ox in range(ow):
                    acc = 0 if bl is None else bl[mi]
                    for ni in range(n):
                        for i in range(kh):
                            for j in range(kw):
                                iy = oy * sh + i - ph
                                ix = ox * sw + j - pw
                                if 0 <= iy < h and 0 <= ix < wd:
                                    v = xl[bi][ni][iy][ix]
                                else:
                                    v = pad_value
                                acc += wl[mi][ni][i][j] * v
                    out[bi][mi][oy][ox] = acc
    return out


def naive_linear(x, w, b):
    out = []
    for row in x.tolist():
        out.append([sum(wv * xv for wv, xv in zip(wrow, row)) + (0 if b is None else bv)
                    for wrow, bv in zip(w.tolist(), [0] * len(w) if b is None else b.tolist())])
    return out


def naive_max_pool(x, kernel, stride):
    bsz, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((bsz, c, oh, ow), x.dtype)
    for bi, ci, oy, ox in itertools.product(range(bsz), range(c), range(oh), range(ow)):
        best = x[bi, ci, oy * sh, ox * sw]
        for i, j in itertools.product(range(kh), range(kw)):
            v = x[bi, ci, oy * sh + i, ox * sw + j]
            if v > best:
                best = v
        out[bi, ci, oy, ox] = best
    return out


def c_div(a, b):
    """C's integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_srdhm(a, b):
    """gemmlowp fixedpoint.h, SaturatingRoundingDoublingHighMul(std::int32_t a, std::int32_t b):

        bool overflow = a == b && a == std::numeric_limits<std::int32_t>::min();
        std::int64_t a_64(a); std::int64_t b_64(b);
        std::int64_t ab_64 = a_64 * b_64;
        std::int32_t nudge = ab_64 >= 0 ? (1 << 30) : (1 - (1 << 30));
        std::int32_t ab_x2_high32 = static_cast<std::int32_t>((ab_64 + nudge) / (1ll << 31));
        return overflow ? std::numeric_limits<std::int32_t>::max() : ab_x2_high32;
    """
    assert INT32_MIN <= a <= INT32_MAX and INT32_MIN <= b <= INT32_MAX
    overflow = a == b and a == INT32_MIN
    ab_64 = a * b
    assert -(1 << 63) <= ab_64 < (1 << 63)
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = c_div(ab_64 + nudge, 1 << 31)
    if overflow:
        return INT32_MAX
    assert INT32_MIN <= ab_x2_high32 <= INT32_MAX          # the static_cast is lossless
    return ab_x2_high32


def ref_rounding_divide_by_pot(x, exponent):
    """gemmlowp fixedpoint.h, RoundingDivideByPOT(IntegerType x, int exponent):

        assert(exponent >= 0); assert(exponent <= 31);
        const IntegerType mask = Dup<IntegerType>((1ll << exponent) - 1);
        const IntegerType zero = Dup<IntegerType>(0);
        const IntegerType one = Dup<IntegerType>(1);
        const IntegerType remainder = BitAnd(x, mask);
        const IntegerType threshold =
            Add(ShiftRight(mask, 1), BitAnd(MaskIfLessThan(x, zero), one));
        return Add(ShiftRight(x, exponent),
                   BitAnd(MaskIfGreaterThan(remainder, threshold), one));

    Python's ``&`` and ``>>`` on negative ints act on an infinite two's complement, which agrees
    with int32 two's complement on the low 32 bits and with C's arithmetic right shift."""
    assert 0 <= exponent <= 31 and INT32_MIN <= x <= INT32_MAX
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def round_half_away(q):
    """Nearest integer to the Fraction q, ties away from zero (what RoundingDivideByPOT means)."""
    r = abs(q)
    n = int(r)                                        # floor of a non-negative Fraction
    if r - n >= Fraction(1, 2):
        n += 1
    return n if q >= 0 else -n


# ------------------------------------------------------------------------------------------------
# Strategies


def pair(lo, hi):
    return st.tuples(st.integers(lo, hi), st.integers(lo, hi))


@st.composite
def conv_case(draw):
    """A random convolution shape: odd sizes, channel counts that are not powers of two,
    rectangular kernels, stride 1 or 2, padding 0 or 1 (per axis)."""
    kh, kw = draw(pair(1, 3))
    sh, sw = draw(pair(1, 2))
    ph, pw = draw(pair(0, 1))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    b = draw(st.integers(1, 2))
    n = draw(st.sampled_from([1, 3, 5, 6]))
    m = draw(st.sampled_from([1, 2, 3, 7]))
    seed = draw(st.integers(0, 2**32 - 1))
    return (b, n, h, w), (m, n, kh, kw), (sh, sw), (ph, pw), seed


# ------------------------------------------------------------------------------------------------
# Float reference ops


@SETTINGS
@given(conv_case(), st.booleans())
@example(((1, 3, 7, 5), (5, 3, 3, 2), (2, 2), (1, 0), 1), True)
@example(((2, 1, 1, 1), (3, 1, 3, 3), (1, 1), (1, 1), 2), False)
def test_conv2d_float_matches_naive(case, with_bias):
    xs, ws, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if with_bias else None
    got = conv2d_float(x, w, b, stride, padding)
    want = np.array(naive_conv2d(x.astype(np.float64), w.astype(np.float64),
                                 None if b is None else b.astype(np.float64),
                                 stride, padding, 0.0))
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 17), st.integers(1, 11), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_linear_float_matches_naive(bsz, f, o, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((bsz, f)).astype(np.float32)
    w = rng.standard_normal((o, f)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if with_bias else None
    got = linear_float(x, w, b)
    want = np.array(naive_linear(x.astype(np.float64), w.astype(np.float64),
                                 None if b is None else b.astype(np.float64)))
    assert got.dtype == np.float32 and got.shape == (bsz, o)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(st.sampled_from([np.float32, np.int8]), st.sampled_from([2, 3]), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 6), st.integers(0, 6), st.integers(0, 2**32 - 1))
@example(np.int8, 3, 2, 2, 0, 0, 0)                   # kernel 3, stride 2, exact fit
@example(np.int8, 2, 1, 1, 4, 1, 0)                   # kernel 2, stride 1 (overlapping)
@example(np.float32, 2, 3, 1, 5, 2, 0)                # stride > kernel (skips pixels)
def test_max_pool2d_matches_naive(dtype, k, sh, sw, extra_h, extra_w, seed):
    rng = np.random.default_rng(seed)
    shape = (2, 3, k + extra_h, k + extra_w)
    if dtype == np.int8:
        x = rng.integers(-128, 128, shape).astype(np.int8)
        x.flat[0] = -128                              # extremes present
        x.flat[-1] = 127
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    got = max_pool2d(x, (k, k), (sh, sw))
    want = naive_max_pool(x, (k, k), (sh, sw))
    assert got.dtype == x.dtype
    assert np.array_equal(got, want)


def test_max_pool2d_default_stride_is_kernel():
    x = np.arange(2 * 3 * 7 * 6).reshape(2, 3, 7, 6).astype(np.int8)
    assert np.array_equal(max_pool2d(x, (3, 2)), naive_max_pool(x, (3, 2), (3, 2)))
    assert np.array_equal(max_pool2d(x), naive_max_pool(x, (2, 2), (2, 2)))


def test_max_pool2d_all_negative_int8():
    """Pooling a window of -128s must give -128 (no padding value of 0 sneaks in)."""
    x = np.full((1, 2, 5, 5), -128, np.int8)
    assert np.array_equal(max_pool2d(x, (3, 3), (2, 2)), np.full((1, 2, 2, 2), -128, np.int8))


# ------------------------------------------------------------------------------------------------
# Integer convolution and linear accumulators


@SETTINGS
@given(conv_case(), st.integers(-128, 127), st.sampled_from(["random", "min", "max", "mixed"]))
@example(((1, 5, 3, 3), (3, 5, 3, 3), (1, 1), (1, 1), 0), -128, "min")
@example(((1, 6, 5, 5), (2, 6, 3, 3), (2, 2), (1, 1), 0), 127, "max")
def test_conv2d_acc_matches_naive(case, zp, extremes):
    """Exact equality, with the input zero point as padding value; extremes cover -128/127
    inputs against +-127 weights (the largest magnitude products)."""
    xs, ws, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    if extremes == "random":
        x = rng.integers(-128, 128, xs).astype(np.int8)
        w = rng.integers(-127, 128, ws).astype(np.int8)
    elif extremes == "min":
        x = np.full(xs, -128, np.int8)
        w = np.full(ws, -127, np.int8)
    elif extremes == "max":
        x = np.full(xs, 127, np.int8)
        w = np.full(ws, 127, np.int8)
    else:
        x = rng.choice(np.array([-128, 127], np.int8), xs)
        w = rng.choice(np.array([-127, 127], np.int8), ws)
    b = rng.integers(-(1 << 20), 1 << 20, ws[0]).astype(np.int32)
    got = conv2d_acc(x, w, b, stride, padding, zp)
    want = naive_conv2d(x.astype(np.int64), w.astype(np.int64), b.astype(np.int64), stride,
                        padding, zp)
    assert got.dtype == np.int64
    assert got.tolist() == want


def test_conv2d_acc_padding_is_zero_point():
    """With x equal to z_in everywhere, every output (border ones included) is z_in·Σw + b."""
    x = np.full((1, 2, 3, 3), 37, np.int8)
    w = np.arange(-9, 9).reshape(1, 2, 3, 3).astype(np.int8)
    acc = conv2d_acc(x, w, np.array([5], np.int32), (1, 1), (1, 1), 37)
    assert np.all(acc == 37 * int(w.astype(np.int64).sum()) + 5)


def test_conv2d_acc_overflow_raises():
    x = np.full((1, 1, 1, 1), 127, np.int8)
    w = np.full((1, 1, 1, 1), 127, np.int8)
    with pytest.raises(OverflowError):
        conv2d_acc(x, w, np.array([INT32_MAX], np.int64), (1, 1), (0, 0), 0)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_linear_acc_matches_naive(bsz, f, o, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (bsz, f)).astype(np.int8)
    w = rng.integers(-127, 128, (o, f)).astype(np.int8)
    b = rng.integers(-(1 << 24), 1 << 24, o).astype(np.int32)
    assert linear_acc(x, w, b).tolist() == naive_linear(x.astype(np.int64), w.astype(np.int64),
                                                       b.astype(np.int64))


# ------------------------------------------------------------------------------------------------
# gemmlowp fixed-point primitives

int32s = st.integers(INT32_MIN, INT32_MAX)
SRDHM_CORNERS = [
    (INT32_MIN, INT32_MIN),                           # the only overflow: saturates
    (INT32_MAX, INT32_MAX),
    (INT32_MIN, INT32_MAX), (INT32_MAX, INT32_MIN),
    (INT32_MIN, 1), (INT32_MIN, -1), (-1, INT32_MIN),
    (0, INT32_MIN), (0, 0), (1, 1), (-1, -1), (-1, 1),
    (1 << 30, 1), (1 << 30, -1), (-(1 << 30), 1),     # ab/2^31 = ±1/2: ties
    (3, 1 << 30), (-3, 1 << 30), (7, -(1 << 30)),     # ab/2^31 = ±3/2, -7/2: ties
    (3 << 15, 1 << 15), (-(3 << 15), 1 << 15),        # ±3/2 through a product of halves
    (3 << 29, 1), (3 << 29, -1),                      # ±3/4: not a tie
    ((1 << 31) - 1, 1 << 30), (INT32_MIN, 1 << 30),
    (1518500250, 1518500250),                         # ≈ sqrt(2)·2^30 squared
]


def test_srdhm_corners():
    for a, b in SRDHM_CORNERS:
        assert int(srdhm(a, b)) == ref_srdhm(a, b), (a, b)
    assert int(srdhm(INT32_MIN, INT32_MIN)) == INT32_MAX
    assert int(srdhm(INT32_MAX, INT32_MAX)) == INT32_MAX - 1
    # ties: ab/2^31 = +1/2 rounds up, -1/2 rounds toward zero (gemmlowp's nudge asymmetry)
    assert int(srdhm(1 << 30, 1)) == 1
    assert int(srdhm(-(1 << 30), 1)) == 0
    a = np.array([p[0] for p in SRDHM_CORNERS], np.int32)
    b = np.array([p[1] for p in SRDHM_CORNERS], np.int32)
    assert srdhm(a, b).tolist() == [ref_srdhm(*p) for p in SRDHM_CORNERS]


@settings(max_examples=200, deadline=None)
@given(int32s, int32s)
def test_srdhm_matches_gemmlowp(a, b):
    assert int(srdhm(a, b)) == ref_srdhm(a, b)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(int32s, int32s), min_size=1, max_size=50))
def test_srdhm_vectorised_and_broadcast(pairs):
    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    got = srdhm(a, b)
    assert got.tolist() == [ref_srdhm(int(x), int(y)) for x, y in pairs]
    # broadcasting a column of a against a row of b, as requantize does per channel
    grid = srdhm(a[:, None], b[None, :5])
    assert grid.tolist() == [[ref_srdhm(int(x), int(y)) for y in b[:5]] for x in a]


def rdbpot_corners():
    cases = []
    for n in (0, 1, 2, 5, 16, 30, 31):
        cases += [(INT32_MIN, n), (INT32_MAX, n), (0, n), (1, n), (-1, n)]
        if n >= 1:
            half = 1 << (n - 1)
            for k in (0, 1, 2, 7):
                tie = (2 * k + 1) * half              # x/2^n = k + 1/2 exactly
                if tie <= INT32_MAX:
                    cases += [(tie, n), (-tie, n), (tie - 1, n), (-tie + 1, n), (tie + 1, n),
                              (-tie - 1, n)]
    return cases


def test_rounding_divide_by_pot_corners():
    for x, n in rdbpot_corners():
        got = int(rounding_divide_by_pot(x, n))
        assert got == ref_rounding_divide_by_pot(x, n), (x, n)
        assert got == round_half_away(Fraction(x, 1 << n)), (x, n)
    # ties go away from zero: ±2.5 -> ±3, ±0.5 -> ±1; exponent 0 is the identity
    assert int(rounding_divide_by_pot(5, 1)) == 3 and int(rounding_divide_by_pot(-5, 1)) == -3
    assert int(rounding_divide_by_pot(1 << 30, 31)) == 1
    assert int(rounding_divide_by_pot(-(1 << 30), 31)) == -1
    assert int(rounding_divide_by_pot(INT32_MIN, 31)) == -1
    assert int(rounding_divide_by_pot(INT32_MAX, 31)) == 1
    assert int(rounding_divide_by_pot(INT32_MIN, 0)) == INT32_MIN


@settings(max_examples=300, deadline=None)
@given(int32s, st.integers(0, 31))
def test_rounding_divide_by_pot_matches_gemmlowp(x, n):
    got = int(rounding_divide_by_pot(x, n))
    assert got == ref_rounding_divide_by_pot(x, n)
    assert got == round_half_away(Fraction(x, 1 << n))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(int32s, st.integers(0, 31)), min_size=1, max_size=50))
def test_rounding_divide_by_pot_vectorised(pairs):
    x = np.array([p[0] for p in pairs], np.int64)
    n = np.array([p[1] for p in pairs], np.int64)
    assert rounding_divide_by_pot(x, n).tolist() == [ref_rounding_divide_by_pot(*p)
                                                      for p in pairs]


# ------------------------------------------------------------------------------------------------
# requantize


def ref_requantize(acc, m0, n, zp, lo, hi):
    return min(max(zp + ref_rounding_divide_by_pot(ref_srdhm(acc, m0), n), lo), hi)


multipliers = st.one_of(st.integers(1 << 30, (1 << 31) - 1), st.just(0))


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), st.integers(-128, 127),
       st.integers(-128, 127), st.integers(-128, 127), st.integers(0, 2**32 - 1), st.data())
def test_requantize_per_channel_conv(m, h, w, zp, lo, hi, seed, data):
    """(B, M, H, W) accumulators, one (M0, n) per channel on axis 1, clamp [lo, hi]."""
    lo, hi = min(lo, hi), max(lo, hi)
    rng = np.random.default_rng(seed)
    acc = rng.integers(INT32_MIN, INT32_MAX, (2, m, h, w), endpoint=True)
    acc[0, 0, 0, 0] = INT32_MIN
    acc[-1, -1, -1, -1] = INT32_MAX
    m0 = data.draw(st.lists(multipliers, min_size=m, max_size=m))
    n = data.draw(st.lists(st.integers(0, 31), min_size=m, max_size=m))
    got = requantize(acc, np.array(m0), np.array(n), zp, lo, hi)
    assert got.dtype == np.int8 and got.shape == acc.shape
    assert got.min() >= lo and got.max() <= hi
    want = np.empty_like(acc)
    for idx in np.ndindex(acc.shape):
        c = idx[1]
        want[idx] = ref_requantize(int(acc[idx]), m0[c], n[c], zp, lo, hi)
    assert np.array_equal(got, want)


@SETTINGS
@given(st.integers(1, 6), st.integers(0, 2**32 - 1), st.data())
def test_requantize_per_channel_linear(o, seed, data):
    """(B, O) accumulators of a Linear: the channel is axis 1 too, and small accumulators
    (the realistic case) map to the real product acc·M0·2^(-31-n) within one step."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-(1 << 20), 1 << 20, (3, o))
    m0 = np.array(data.draw(st.lists(st.integers(1 << 30, (1 << 31) - 1), min_size=o,
                                     max_size=o)))
    n = np.array(data.draw(st.lists(st.integers(0, 31), min_size=o, max_size=o)))
    got = requantize(acc, m0, n, 0, -128, 127)
    want = [[ref_requantize(int(acc[i, j]), int(m0[j]), int(n[j]), 0, -128, 127)
             for j in range(o)] for i in range(3)]
    assert got.tolist() == want
    real = acc * (m0 / 2.0 ** 31 / 2.0 ** n)[None, :]
    inside = np.abs(real) < 127
    assert np.all(np.abs(got[inside] - real[inside]) <= 1)


def test_requantize_clamp_bounds():
    acc = np.array([-(1 << 31), -1000, -1, 0, 1, 1000, (1 << 31) - 1], np.int64).reshape(7, 1)
    m0, n = np.array([1 << 30]), np.array([0])        # M = 1/2
    y = requantize(acc, m0, n, 10, -5, 20)
    assert y.ravel().tolist() == [-5, -5, 10, 10, 11, 20, 20]
    # ReLU-style clamp at the zero point; full range leaves values alone
    assert requantize(acc, m0, n, -128, -128, 127).ravel().tolist() == [
        -128, -128, -128, -128, -127, 127, 127]
    # channel axis other than 1
    acc2 = np.array([[100, 100]], np.int64)
    y2 = requantize(acc2.T, np.array([1 << 30, 1 << 30]), np.array([0, 1]), 0, -128, 127,
                    axis=0)
    assert y2.ravel().tolist() == [50, 25]
