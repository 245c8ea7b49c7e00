"""Golden model of the MobileNet ops: depthwise/grouped convolution, average pooling, TFLite's
int8 add, and small DAGs (layer sources) in the network description and the quantizer."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnnforge.hw.frontend.network import (Add, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Flatten, Linear,
                                  NetworkError, ReLU, ReLU6, Sequential)
from cnnforge.hw.frontend.quantize import QuantOp, quantize, quantize_multiplier, set_add_params
from cnnforge.sim.golden import (add_quantized, avg_pool2d_float, conv2d_acc, conv2d_float,
                                 run_quantized)

SETTINGS = settings(max_examples=40, deadline=None)


def naive_grouped_conv(x, w, b, stride, padding, groups, fill=0):
    """Seven nested loops, straight from the definition of torch's grouped conv2d."""
    bsz, n, h, wd = x.shape
    m, ng, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.full((bsz, n, h + 2 * ph, wd + 2 * pw), fill, np.float64)
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((bsz, m, oh, ow))
    mg = m // groups
    for bi in range(bsz):
        for mm in range(m):
            g = mm // mg
            for oy in range(oh):
                for ox in range(ow):
                    acc = 0.0 if b is None else b[mm]
                    for nn in range(ng):
                        for i in range(kh):
                            for j in range(kw):
                                acc += (w[mm, nn, i, j]
                                        * xp[bi, g * ng + nn, oy * sh + i, ox * sw + j])
                    y[bi, mm, oy, ox] = acc
    return y


@st.composite
def grouped_case(draw):
    groups = draw(st.integers(1, 4))
    n = groups * draw(st.integers(1, 2))
    m = groups * draw(st.integers(1, 2))
    k = draw(st.integers(1, 3))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    h = draw(st.integers(max(1, k - 2 * p[0]), 7))
    w = draw(st.integers(max(1, k - 2 * p[1]), 7))
    return (draw(st.integers(1, 2)), n, h, w), (m, n // groups, k, k), s, p, groups


@SETTINGS
@given(grouped_case(), st.integers(0, 2**32 - 1))
@example(((1, 4, 5, 5), (4, 1, 3, 3), (2, 2), (1, 1), 4), 0)      # depthwise, stride 2
def test_grouped_conv_float_and_int_match_naive(case, seed):
    """Grouped and depthwise convolution, float and int8 accumulators (zero-point padding),
    against the loop transcription of the definition."""
    xs, ws, stride, padding, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    np.testing.assert_allclose(conv2d_float(x, w, b, stride, padding, groups),
                               naive_grouped_conv(x, w, b, stride, padding, groups), rtol=1e-4,
                               atol=1e-4)
    xq = rng.integers(-128, 128, xs).astype(np.int8)
    wq = rng.integers(-127, 128, ws).astype(np.int8)
    bq = rng.integers(-1000, 1000, ws[0])
    zp = int(rng.integers(-128, 128))
    acc = conv2d_acc(xq, wq, bq, stride, padding, zp, groups)
    assert np.array_equal(acc, naive_grouped_conv(xq, wq, bq, stride, padding, groups, fill=zp))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 3), st.integers(0, 3),
       st.integers(0, 2**32 - 1))
def test_avg_pool_float_matches_naive(k, s, extra_h, extra_w, seed):
    x = np.random.default_rng(seed).standard_normal((2, 3, k + extra_h, k + extra_w))
    y = avg_pool2d_float(x, (k, k), (s, s))
    for oy in range(y.shape[2]):
        for ox in range(y.shape[3]):
            np.testing.assert_allclose(
                y[:, :, oy, ox], x[:, :, oy * s:oy * s + k, ox * s:ox * s + k].mean(axis=(2, 3)),
                rtol=1e-5, atol=1e-6)


def _rounding_shift(x, n):
    """x / 2^n rounded to nearest, ties away from zero, in Python integers."""
    if n == 0:
        return x
    q, r = divmod(abs(x), 1 << n)
    q += r * 2 >= 1 << n
    return q if x >= 0 else -q


def _tflite_mul(x, m0, n):
    """MultiplyByQuantizedMultiplierSmallerThanOneExp in Python big integers: gemmlowp's
    SaturatingRoundingDoublingHighMul (nudge 2^30, or 1 − 2^30 for a negative product, then a
    division truncating toward zero: a negative tie rounds toward zero), then the rounding
    shift."""
    ab = x * m0
    nudged = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    high = abs(nudged) >> 31
    high = high if nudged >= 0 else -high
    return _rounding_shift(high, n)


@SETTINGS
@given(st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.floats(1e-3, 2.0), st.integers(-128, 127),
       st.integers(-128, 127), st.integers(-128, 127), st.integers(0, 2**32 - 1))
def test_add_matches_tflite_transcription_and_float(s1, s2, so, z1, z2, zo, seed):
    """TFLite's int8 add: equal to a big-integer transcription of the reference kernel
    (``reference/integer_ops/add.h``) on every input pair, and within one output step of the
    exact real sum."""
    op = QuantOp("add", "0", [], (3, 4, 5), (3, 4, 5), s1, z1, output_scale=so,
                 output_zero_point=zo, input2_scale=s2, input2_zero_point=z2)
    twice_max = 2 * max(s1, s2)
    real_out = twice_max / ((1 << 20) * so)
    set_add_params(op, real_out)
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)
    b = rng.integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)
    a.flat[:2], b.flat[:2] = (-128, 127), (127, -128)
    got = add_quantized(a, b, op)
    (m1, m2), (n1, n2) = op.add_multiplier, op.add_shift
    for x1, x2, y in zip(a.flat, b.flat, got.flat):
        raw = (_tflite_mul((int(x1) - z1) << 20, m1, n1)
               + _tflite_mul((int(x2) - z2) << 20, m2, n2))
        want = max(-128, min(127, _tflite_mul(raw, int(op.multiplier[0]), int(op.shift[0])) + zo))
        assert y == want
        exact = ((int(x1) - z1) * s1 + (int(x2) - z2) * s2) / so + zo
        if -128 <= exact <= 127:
            assert abs(int(y) - exact) <= 0.5 + 1e-3 + 2.0 ** -18 * (255 * twice_max / so), (
                y, exact)


def _random_net(layers, input_shape, seed=0):
    net = Sequential(*layers, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    net.load_state_dict({k: (rng.standard_normal(s) / math.sqrt(max(1, np.prod(s[1:]))))
                         .astype(np.float32) for k, s in net.state_dict_shapes().items()})
    net.calibration = rng.standard_normal((32, *input_shape)).astype(np.float32)
    return net


def inverted_residual(c=6, expand=3, residual=True, stride=1):
    """MobileNetV2 block: expand 1×1 + ReLU6, depthwise 3×3 + ReLU6, project 1×1 (linear),
    [+ the block input]; a stem conv first so the block input is an intermediate tensor."""
    hidden = c * expand
    layers = [Conv2d(2, c, 3, padding=1), ReLU6(),                   # 0, 1: block input
              Conv2d(c, hidden, 1), ReLU6(),                          # 2, 3: expand
              Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden), ReLU6(),
              Conv2d(hidden, c, 1)]                                   # 6: project
    if residual:
        layers.append(Add(1))                                         # 7
    return layers + [AdaptiveAvgPool2d(1), Flatten(), Linear(c, 5)]


@pytest.mark.parametrize("residual", [True, False])
def test_inverted_residual_quantized_close_to_float(residual):
    """The quantized block (depthwise, pointwise, add, global average pool) stays within a few
    output steps of the float network, and the DAG structure reaches the ops."""
    net = _random_net(inverted_residual(residual=residual), (2, 7, 6), seed=3)
    qnet = quantize(net)
    kinds = [op.kind for op in qnet.ops]
    assert kinds == (["conv"] * 4 + (["add"] if residual else [])
                     + ["conv", "flatten", "linear"])
    if residual:
        add = qnet.ops[4]
        assert add.inputs == [3, 0] and add.name == "7"
        assert add.input_scale == qnet.ops[3].output_scale
        assert add.input2_scale == qnet.ops[0].output_scale
    assert qnet.ops[2].groups == 18 and qnet.ops[-3].groups == 6      # depthwise, avg pool
    x = net.calibration
    result = run_quantized(qnet, qnet.quantize_input(x))
    floats = net.forward(x, intermediates=True)
    for op, out in zip(qnet.ops, result):
        last = op.layers[-1].index
        err = np.abs((out.astype(np.float64) - op.output_zero_point) * op.output_scale
                     - floats[last].reshape(out.shape))
        # a few steps: input quantization and every op's rounding accumulate
        assert err.max() <= 6 * op.output_scale, (op.name, err.max() / op.output_scale)


def test_avg_pool_is_exact_mean_when_scales_allow():
    """AvgPool2d(2) of integers whose sums divide by 4 reproduces the exact mean: the all-ones
    depthwise sum is exact and the multiplier 1/4 rounds once."""
    net = Sequential(AvgPool2d(2), input_shape=(1, 2, 2))
    calib = np.array([[[[0.0, 1.0], [1.0, 2.0]]], [[[-1.0, 3.0], [0.0, 2.0]]]], np.float32)
    qnet = quantize(net, calib)
    op = qnet.ops[0]
    assert op.kind == "conv" and op.groups == 1 and op.weight.tolist() == [[[[1, 1], [1, 1]]]]
    x = qnet.quantize_input(calib)
    y = run_quantized(qnet, x)[-1]
    want = (calib.mean(axis=(2, 3)) / op.output_scale).round() + op.output_zero_point
    assert np.abs(y.reshape(-1) - want.reshape(-1)).max() <= 1


def test_sources_and_errors():
    """Add(i) names its skip input; explicit sources; the error messages name the layer."""
    net = Sequential(Conv2d(2, 2, 1), ReLU(), Conv2d(2, 2, 1), Add(1), Add(-1, 3),
                     input_shape=(2, 3, 3))
    assert [layer.sources for layer in net] == [(-1,), (0,), (1,), (2, 1), (-1, 3)]
    assert net.consumers(1) == [2, 3] and net.consumers(-1) == [0, 4]
    with pytest.raises(NetworkError, match=r"^layer 2 \(Add\): input shapes \(3, 4, 4\) "
                                           r"\(layer 1\) and \(2, 4, 4\) \(layer 0\) differ$"):
        Sequential(Conv2d(1, 2, 1), Conv2d(2, 3, 1), Add(0), input_shape=(1, 4, 4))
    with pytest.raises(NetworkError, match=r"^layer 1 \(Add\): source 5 is not an earlier layer"):
        Sequential(Conv2d(1, 1, 1), Add(5), input_shape=(1, 4, 4))
    # a ReLU whose input is also read elsewhere cannot be fused
    net = _random_net([Conv2d(1, 2, 1), Conv2d(2, 2, 1), ReLU(), Add(1)], (1, 3, 3))
    with pytest.raises(NetworkError, match=r"^layer 2 \(ReLU\): its input \(layer 1\) is also "
                                           r"read by layers \[3\]"):
        quantize(net)


def test_reused_layers_get_their_default_sources_back():
    layer = ReLU()
    Sequential(Conv2d(1, 1, 1), Conv2d(1, 1, 1), layer, input_shape=(1, 2, 2))
    net = Sequential(Conv2d(1, 1, 1), layer, input_shape=(1, 2, 2))
    assert layer.sources == (0,) and net.consumers(0) == [1]


def test_grouped_conv_shapes_and_multiplier_range():
    conv = Conv2d(4, 8, 3, groups=2)
    assert conv.parameter_shapes()["weight"] == (8, 2, 3, 3) and not conv.depthwise
    assert Conv2d(4, 4, 3, groups=4).depthwise and not Conv2d(4, 4, 3).depthwise
    assert not Conv2d(4, 4, 3, groups=4).winograd_applies
    assert quantize_multiplier(0.25) == (1 << 30, 1)
