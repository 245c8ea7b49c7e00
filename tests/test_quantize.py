"""Quantizer (``cnnforge.hw.frontend.quantize``): fixed-point multipliers, activation ranges, and the
quantized network against its float original within a derived error bound."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cnnforge.hw.frontend.network import (
    Conv2d, Flatten, Linear, MaxPool2d, NetworkError, ReLU, ReLU6, Sequential,
)
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import QMAX, QMIN, activation_params, quantize, quantize_multiplier
from cnnforge.sim.golden import (
    conv2d_acc, conv2d_float, linear_acc, requantize, rounding_divide_by_pot, run_op,
    run_quantized, srdhm,
)

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits" / "net.py"


# ------------------------------------------------------------------------------------------------
# quantize_multiplier


@settings(max_examples=500, deadline=None)
@given(st.floats(2.0 ** -40, 1.0, exclude_min=True, exclude_max=True))
@example(0.5)
@example(math.nextafter(0.5, 0))
@example(math.nextafter(1.0, 0))                      # rounds to M0 = 2^31: must not give n = -1
@example(1 - 2.0 ** -33)
@example(1 - 2.0 ** -31)
@example(2.0 ** -32)
@example(2.0 ** -32 * (1 - 2.0 ** -34))               # rounds up to 2^-32: representable
@example(math.nextafter(2.0 ** -32, 0) * (1 - 2.0 ** -30))
@example(2.0 ** -31)
def test_quantize_multiplier(real):
    """``M0`` in [2^30, 2^31), ``n`` in [0, 31], ``M0·2^(−31−n)`` within relative 2^−30 of
    ``real``. Below 2^−32 the multiplier is not representable with n ≤ 31 and the function
    returns (0, 0); that is exact, because |acc·real| < 2^31·2^−32 = 1/2 for every int32 acc,
    so the correctly rounded product is 0 too."""
    m0, n = quantize_multiplier(real)
    assert isinstance(m0, int) and isinstance(n, int)
    if m0 == 0:
        assert n == 0
        assert real < 2.0 ** -32
        assert abs(real * 2 ** 31) < 0.5
        acc = np.array([[-(1 << 31)], [(1 << 31) - 1]], np.int64)
        assert np.all(requantize(acc, [m0], [n], 3, -128, 127) == 3)
        return
    assert 1 << 30 <= m0 < 1 << 31
    assert 0 <= n <= 31
    approx = m0 * 2.0 ** (-31 - n)                    # exact in float64 (31-bit significand)
    assert abs(approx - real) <= real * 2.0 ** -30
    if real >= 2.0 ** -32:
        assert m0 != 0


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0) == (0, 0)
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(0.25) == (1 << 30, 1)
    assert quantize_multiplier(2.0 ** -32) == (1 << 30, 31)
    assert quantize_multiplier(2.0 ** -33) == (0, 0)
    assert quantize_multiplier(math.nextafter(1.0, 0)) == ((1 << 31) - 1, 0)
    for bad in (1.0, 1.5, 2.0 ** 40, -1e-9, -0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="outside"):
            quantize_multiplier(bad)


@settings(max_examples=200, deadline=None)
@given(st.floats(2.0 ** -30, 1.0, exclude_max=True), st.integers(-(1 << 20), 1 << 20))
def test_multiplier_applied_matches_real_product(real, acc):
    """SRDHM followed by RoundingDivideByPOT applies ``real`` to an accumulator within
    1/2 + 2^−(n+1) (two roundings) plus the multiplier's relative error."""
    m0, n = quantize_multiplier(real)
    got = int(rounding_divide_by_pot(srdhm(acc, m0), n))
    assert abs(got - acc * real) <= 0.5 + 2.0 ** -(n + 1) + abs(acc) * real * 2.0 ** -30


# ------------------------------------------------------------------------------------------------
# activation_params


def quantize_values(v, scale, zp):
    return np.clip(np.round(np.asarray(v, np.float64) / scale) + zp, QMIN, QMAX)


ranges = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=300, deadline=None)
@given(ranges, ranges)
@example(-1.0, 1.0)
@example(0.0, 1.0)
@example(-1.0, 0.0)
@example(0.0, 0.0)
@example(0.3, 0.7)                                    # range not containing 0 is widened
@example(-0.7, -0.3)
@example(-0.3, 1.0)                                   # zero point rounding shifts the range
def test_activation_params(a, b):
    """0.0 is exactly representable (quantize(0) == zero_point, which dequantizes to 0.0), and
    the 256 levels cover [min(lo, 0), max(hi, 0)]: the grid spans 255·scale ≥ hi − lo, and every
    value in the range quantizes (with saturation) to within half a step. Rounding the zero
    point to an integer shifts the grid by up to half a step (as TFLite's nudged range does), so
    an end of the range may fall up to scale/2 outside the grid; it then saturates to the last
    level, still within half a step."""
    lo, hi = min(a, b), max(a, b)
    scale, zp = activation_params(lo, hi)
    assert isinstance(zp, int) and QMIN <= zp <= QMAX
    assert scale > 0
    assert quantize_values(0.0, scale, zp) == zp
    assert (zp - zp) * scale == 0.0
    lo_w, hi_w = min(lo, 0.0), max(hi, 0.0)
    assert 255 * scale >= (hi_w - lo_w) * (1 - 1e-12)
    grid_lo, grid_hi = (QMIN - zp) * scale, (QMAX - zp) * scale
    tol = scale * (0.5 + 1e-9)
    assert grid_lo <= lo_w + tol and grid_hi >= hi_w - tol
    values = np.concatenate([[lo_w, hi_w, lo, hi, 0.0], np.linspace(lo_w, hi_w, 101)])
    err = np.abs((quantize_values(values, scale, zp) - zp) * scale - values)
    assert err.max() <= tol
    if lo >= 0:
        assert zp == QMIN                             # non-negative data: 0 at the bottom
    if hi <= 0 and lo <= -1e-8:                       # (narrower ranges are widened upwards)
        assert zp == QMAX


# ------------------------------------------------------------------------------------------------
# Quantized ops against float, within a derived bound


def quantize_tensor(x, scale, zp):
    return quantize_values(x, scale, zp).astype(np.int8)


def op_errors(qnet, calib):
    """For every conv/linear op: (name, max |error|, max bound, max |float output|, out scale).

    Each op is run in isolation on its own float input ``x`` (the float network's output of the
    layer before it) quantized with the op's input scale ``s_in`` and zero point; its int8 output
    is dequantized and compared with the float output ``y`` of the layers it covers (the layer and
    its fused activation), element by element, against

        E = s_in/2 · Σ|ŵ_m|  +  s_w[m]/2 · Σ_window |x|  +  s_in·s_w[m]/2
            + |A|·2^−30  +  s_out·(1/2 + 2^−(n_m+1))  +  s_out/2

    derived as follows. With x̂ = s_in·(x_q − z_in), ŵ = s_w·w_q, b̂ = s_in·s_w·b_q, the integer
    accumulator is exactly A = s_in·s_w·acc = Σ ŵ·x̂ + b̂ (padding holds z_in, i.e. exactly 0.0),
    so A − (Σ w·x + b) = Σ ŵ·(x̂ − x) + Σ (ŵ − w)·x + (b̂ − b), and
      * |x̂ − x| ≤ s_in/2: x lies in the calibrated range (the calibration data is the test data)
        and every value in that range quantizes within half a step (checked, not assumed);
      * |ŵ − w| ≤ s_w[m]/2 (round to nearest; no clipping since s_w = max|w|/127);
      * |b̂ − b| ≤ s_in·s_w[m]/2.
    Requantization computes RDBPOT(SRDHM(acc, M0), n): two roundings, ≤ 1/2 + 2^−(n+1) output
    steps, of acc·M0·2^(−31−n) = (A/s_out)·(1 + δ) with |δ| ≤ 2^−30 (the multiplier's relative
    error, tested above). The output range covers the float outputs to within s_out/2 (see
    test_activation_params), and the clamp (ReLU/ReLU6 included) is a projection onto that
    interval, so clamping adds at most s_out/2 on top of the unclamped error. Float32 rounding of
    the float reference adds a relative 2^−20 slack.
    """
    outs = qnet.network.forward(calib, intermediates=True)
    report = []
    for op in qnet.ops:
        if op.kind not in ("conv", "linear"):
            continue
        first, last = op.layers[0].index, op.layers[-1].index
        x = calib if first == 0 else outs[first - 1]
        y = outs[last].astype(np.float64)
        s_in, z_in = op.input_scale, op.input_zero_point
        s_out, z_out = op.output_scale, op.output_zero_point
        x_q = quantize_tensor(x, s_in, z_in)
        x_err = np.abs((x_q.astype(np.float64) - z_in) * s_in - x)
        assert x_err.max() <= s_in * (0.5 + 1e-9), "premise: input inside the calibrated range"
        assert np.all(op.multiplier != 0), "premise: no underflowing multiplier"
        got = (run_op(op, x_q).astype(np.float64) - z_out) * s_out

        m = op.weight.shape[0]
        s_w = op.weight_scale
        w_hat_abs = s_w * np.abs(op.weight.reshape(m, -1)).astype(np.float64).sum(axis=1)
        if op.kind == "conv":
            ones = np.ones((1, *op.weight.shape[1:]), np.float32)
            window = conv2d_float(np.abs(x), ones, None, op.stride, op.padding)  # (B,1,OH,OW)
            acc = conv2d_acc(x_q, op.weight, op.bias, op.stride, op.padding, z_in)
            ch = (None, slice(None), None, None)
        else:
            window = np.abs(x).astype(np.float64).sum(axis=1, keepdims=True)   # (B, 1)
            acc = linear_acc(x_q, op.weight, op.bias)
            ch = (None, slice(None))
        a_real = np.abs(acc) * (s_in * s_w)[ch]
        steps = 0.5 + 2.0 ** -(op.shift.astype(np.float64) + 1)
        bound = ((s_in / 2) * w_hat_abs[ch] + (s_w / 2)[ch] * window + (s_in * s_w / 2)[ch]
                 + a_real * 2.0 ** -30 + s_out * steps[ch] + s_out / 2)
        bound = bound + np.abs(y) * 2.0 ** -20
        err = np.abs(got - y)
        assert err.shape == bound.shape
        worst = np.argmax(err - bound)
        assert np.all(err <= bound), (
            f"op {op.name}: error {err.flat[worst]:.6g} > bound {bound.flat[worst]:.6g}")
        report.append((op.name, float(err.max()), float(bound.max()), float(np.abs(y).max()),
                       s_out))
    return report


@st.composite
def small_network(draw):
    """Conv2d (+ReLU, ReLU6 or nothing), MaxPool2d, Flatten, Linear with random shapes and
    weights; returns (network, inputs). The inputs double as calibration data."""
    n = draw(st.integers(1, 4))
    m = draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    # conv output at least 2x2 so the pool fits
    h = draw(st.integers(max(1, kh - 2 * ph + sh), 9))
    w = draw(st.integers(max(1, kw - 2 * pw + sw), 9))
    act = draw(st.sampled_from(["relu", "relu", "relu6", "none"]))
    pool = draw(st.sampled_from([(2, 2), (2, 1), (3, 2)]))
    out = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    pk, ps = pool
    if min(oh, ow) < pk:
        pk = ps = 2 if min(oh, ow) >= 2 else 1
    layers = [Conv2d(n, m, (kh, kw), stride=(sh, sw), padding=(ph, pw))]
    layers += {"relu": [ReLU()], "relu6": [ReLU6()], "none": []}[act]
    layers += [MaxPool2d(pk, stride=ps), Flatten()]
    pool_h, pool_w = (oh - pk) // ps + 1, (ow - pk) // ps + 1
    layers += [Linear(m * pool_h * pool_w, out)]
    net = Sequential(*layers, input_shape=(n, h, w))
    state = {}
    for key, shape in net.state_dict_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
        scale = 1 / math.sqrt(fan_in) if key.endswith("weight") else 0.1
        state[key] = (rng.standard_normal(shape) * scale).astype(np.float32)
    net.load_state_dict(state)
    offset = draw(st.sampled_from([0.0, 0.5, -0.3]))   # asymmetric input ranges
    x = (rng.standard_normal((8, n, h, w)) * 2 + offset).astype(np.float32)
    return net, x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_network())
def test_quantized_ops_within_derived_bound(case):
    """Per-op error of the golden int8 ops against float; the bound E is derived in
    :func:`op_errors` from each op's actual scales, weights and inputs."""
    net, x = case
    qnet = quantize(net, x)
    report = op_errors(qnet, x)
    assert [name for name, *_ in report][-1] == str(len(net) - 1)


def test_digits_ops_within_derived_bound(digits):
    net, qnet = digits
    report = op_errors(qnet, net.calibration)
    assert [r[0] for r in report] == ["0+1", "3+4", "7"]
    for name, err, bound, ymax, s_out in report:
        # the bound is meaningful: a few output steps, not the whole range
        assert bound < 0.2 * ymax, (name, bound, ymax)


# ------------------------------------------------------------------------------------------------
# The folded bias


def direct_acc(op, x_q):
    """Σ w·(x − z_in) + bias_raw, zero padding of (x − z_in), accumulated one kernel offset at a
    time (independent of the golden model's sliding windows)."""
    w = op.weight.astype(np.int64)
    xc = x_q.astype(np.int64) - op.input_zero_point
    if op.kind == "linear":
        return xc @ w.T + op.bias_raw.astype(np.int64)
    (kh, kw), (sh, sw), (ph, pw) = op.kernel_size, op.stride, op.padding
    xp = np.pad(xc, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    acc = np.zeros((x_q.shape[0], w.shape[0], oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            acc += np.einsum("bnhw,mn->bmhw", patch, w[:, :, i, j])
    return acc + op.bias_raw.astype(np.int64)[None, :, None, None]


def check_folded_bias(qnet, rng):
    for op in qnet.ops:
        if op.kind not in ("conv", "linear"):
            continue
        # the raw bias is the float bias on the accumulator scale s_in·s_w, rounded
        bias_f = op.layers[0].bias.astype(np.float64)
        acc_scale = op.input_scale * op.weight_scale
        assert np.all(np.abs(op.bias_raw * acc_scale - bias_f) <= acc_scale * (0.5 + 1e-9))
        x_q = rng.integers(-128, 128, (3, *op.input_shape)).astype(np.int8)
        x_q.flat[0], x_q.flat[-1] = -128, 127
        if op.kind == "conv":
            got = conv2d_acc(x_q, op.weight, op.bias, op.stride, op.padding,
                             op.input_zero_point)
        else:
            got = linear_acc(x_q, op.weight, op.bias)
        assert np.array_equal(got, direct_acc(op, x_q)), op.name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_network(), st.integers(0, 2**32 - 1))
def test_folded_bias_random(case, seed):
    net, x = case
    check_folded_bias(quantize(net, x), np.random.default_rng(seed))


def test_folded_bias_digits(digits):
    check_folded_bias(digits[1], np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------
# The bundled digits network


@pytest.fixture(scope="module")
def digits():
    net = load_network(DIGITS)
    return net, quantize(net)


def test_digits_int8_accuracy(digits):
    """Float accuracy on the held-out split is at least 95 % and int8 is within 2 points."""
    net, qnet = digits
    x, y = net.test_data()
    assert len(x) == 450
    float_acc = float((net(x).argmax(axis=1) == y).mean())
    logits = run_quantized(qnet, qnet.quantize_input(x))[-1]
    int8_acc = float((logits.argmax(axis=1) == y).mean())
    assert float_acc >= 0.95, float_acc
    assert abs(int8_acc - float_acc) <= 0.02, (float_acc, int8_acc)


def test_quantize_rejects_bad_calibration():
    net = Sequential(Conv2d(1, 2, 3), Flatten(), Linear(2, 1), input_shape=(1, 3, 3))
    net.load_state_dict({"0.weight": np.ones((2, 1, 3, 3)), "0.bias": np.zeros(2),
                         "2.weight": np.ones((1, 2)), "2.bias": np.zeros(1)})
    with pytest.raises(NetworkError, match="no calibration data"):
        quantize(net)
    with pytest.raises(NetworkError, match=r"calibration data has shape \(1, 4, 4\), expected "
                                           r"\(1, 3, 3\)"):
        quantize(net, np.zeros((2, 1, 4, 4), np.float32))


def test_zero_weight_channel_does_not_inflate_output_scale():
    """A pruned (all-zero) output channel must not force the output scale up: its weight scale
    is arbitrary, and M = s_in·s_w/s_out < 1 must not be enforced with a made-up s_w = 1.0."""
    net = Sequential(Conv2d(1, 3, 1), ReLU(), MaxPool2d(1), Flatten(), Linear(12, 2),
                     input_shape=(1, 2, 2))
    state = {"0.weight": np.array([1e-3, 0.0, -2e-3]).reshape(3, 1, 1, 1),
             "0.bias": np.array([0.0, 0.05, 0.1]), "4.weight": np.ones((2, 12)) * 0.1,
             "4.bias": np.zeros(2)}
    net.load_state_dict(state)
    x = np.linspace(-50, 100, 16, dtype=np.float32).reshape(4, 1, 2, 2)
    qnet = quantize(net, x)
    y = net.forward(x, intermediates=True)[1]
    assert qnet.ops[0].output_scale == activation_params(y.min(), y.max())[0]
    op_errors(qnet, x)
