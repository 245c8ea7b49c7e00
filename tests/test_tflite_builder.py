"""The ``.tflite`` test-model builder (``tests/tflite_models.py``): one model per op type, run on
TensorFlow Lite Micro's reference kernels. Simple ops are compared exactly with NumPy; the others
with a float reference, to one quantization step (TFLite requantizes with two roundings)."""

import numpy as np
import pytest

from tests.tflite_models import TfliteBuilder, run_tflm, same_padding


def dequantize(q, scale, zero_point):
    return (np.asarray(q, np.float64) - zero_point) * scale


def quantize(real, scale, zero_point, lo=-128, hi=127):
    return np.clip(np.round(real / scale) + zero_point, lo, hi).astype(np.int8)


def conv_nhwc_float(x, w, bias, stride, padding, depthwise=False):
    """Float NHWC convolution with explicit padding ((top, bottom), (left, right)).
    w: [O, kh, kw, I] (or [1, kh, kw, C] depthwise, multiplier 1)."""
    x = np.pad(x, ((0, 0), *padding, (0, 0)))
    _, kh, kw, _ = w.shape
    (sh, sw) = stride
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[0] if not depthwise else w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
            if depthwise:
                y += patch * w[0, i, j]
            else:
                y += patch @ w[:, i, j, :].T
    return y + bias


def assert_within_one_step(got, expected):
    assert got.shape == expected.shape and got.dtype == np.int8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


RNG_SEED = 20240601


def test_conv2d_per_channel_same_stride2_odd_input():
    rng = np.random.default_rng(RNG_SEED)
    s_in, z_in, s_out, z_out = 0.05, -2, 0.1, 1
    w_scales = np.array([0.01, 0.02, 0.015, 0.03], np.float32)
    w_q = rng.integers(-127, 128, (4, 3, 3, 3))
    bias_q = rng.integers(-500, 500, 4)
    b = TfliteBuilder()
    x = b.tensor([1, 7, 7, 3], scale=s_in, zero_point=z_in)
    w = b.tensor([4, 3, 3, 3], scale=w_scales, data=w_q, quantized_dimension=0)
    bias = b.tensor([4], "int32", scale=np.float32(s_in) * w_scales, data=bias_q)
    y = b.tensor([1, 4, 4, 4], scale=s_out, zero_point=z_out)
    b.op("CONV_2D", [x, w, bias], [y], padding="SAME", stride=(2, 2), activation="RELU")
    x_q = rng.integers(-128, 128, (1, 7, 7, 3)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)

    out, before, after = same_padding(7, 3, 2)
    assert (out, before, after) == (4, 1, 1)
    real = conv_nhwc_float(dequantize(x_q, s_in, z_in), w_q * w_scales[:, None, None, None],
                           bias_q * s_in * w_scales, (2, 2), ((before, after), (before, after)))
    assert_within_one_step(got, quantize(np.maximum(real, 0), s_out, z_out, lo=z_out))


def test_conv2d_1x1_exact():
    """Scales 1 and zero points chosen so the requantization multiplier is exactly 1: the output
    is ``clamp(z_out + Σ w·(x − z_in) + bias)`` in integers."""
    z_in, z_out = -3, 5
    weights = np.array([[1, 0, 0], [0, 2, 0], [1, 1, -1], [0, 0, 3]])
    bias_q = np.array([0, 7, -4, 10])
    b = TfliteBuilder()
    x = b.tensor([1, 4, 5, 3], scale=1.0, zero_point=z_in)
    w = b.tensor([4, 1, 1, 3], scale=[1.0] * 4, data=weights.reshape(4, 1, 1, 3))
    bias = b.tensor([4], "int32", scale=[1.0] * 4, data=bias_q)
    y = b.tensor([1, 4, 5, 4], scale=1.0, zero_point=z_out)
    b.op("CONV_2D", [x, w, bias], [y])
    x_q = np.random.default_rng(RNG_SEED).integers(-60, 60, (1, 4, 5, 3)).astype(np.int8)
    x_q[0, 0, 0] = [127, 127, -128]                   # saturates output channels 1, 2 and 3
    got = run_tflm(b.build([x], [y]), x_q)
    expected = np.clip((x_q.astype(int) - z_in) @ weights.T + bias_q + z_out, -128, 127)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected)


def test_depthwise_conv2d_per_channel():
    rng = np.random.default_rng(RNG_SEED + 1)
    s_in, z_in, s_out, z_out = 0.05, 4, 0.08, -3
    w_scales = np.array([0.01, 0.02, 0.015, 0.03], np.float32)
    w_q = rng.integers(-127, 128, (1, 3, 3, 4))
    bias_q = rng.integers(-500, 500, 4)
    b = TfliteBuilder()
    x = b.tensor([1, 5, 6, 4], scale=s_in, zero_point=z_in)
    w = b.tensor([1, 3, 3, 4], scale=w_scales, data=w_q, quantized_dimension=3)
    bias = b.tensor([4], "int32", scale=np.float32(s_in) * w_scales, data=bias_q)
    y = b.tensor([1, 5, 6, 4], scale=s_out, zero_point=z_out)
    b.op("DEPTHWISE_CONV_2D", [x, w, bias], [y], padding="SAME", depth_multiplier=1)
    x_q = rng.integers(-128, 128, (1, 5, 6, 4)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    real = conv_nhwc_float(dequantize(x_q, s_in, z_in), w_q * w_scales, bias_q * s_in * w_scales,
                           (1, 1), ((1, 1), (1, 1)), depthwise=True)
    assert_within_one_step(got, quantize(real, s_out, z_out))


def test_fully_connected():
    rng = np.random.default_rng(RNG_SEED + 2)
    s_in, z_in, s_w, s_out, z_out = 0.05, -2, 0.02, 0.1, 1
    w_q = rng.integers(-127, 128, (3, 6))
    bias_q = rng.integers(-500, 500, 3)
    b = TfliteBuilder()
    x = b.tensor([2, 6], scale=s_in, zero_point=z_in)
    w = b.tensor([3, 6], scale=s_w, data=w_q)
    bias = b.tensor([3], "int32", scale=np.float32(s_in) * np.float32(s_w), data=bias_q)
    y = b.tensor([2, 3], scale=s_out, zero_point=z_out)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], keep_num_dims=False)
    x_q = rng.integers(-128, 128, (2, 6)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    real = dequantize(x_q, s_in, z_in) @ (w_q * s_w).T + bias_q * s_in * s_w
    assert_within_one_step(got, quantize(real, s_out, z_out))


def test_average_pool():
    rng = np.random.default_rng(RNG_SEED + 3)
    b = TfliteBuilder()
    x = b.tensor([1, 6, 6, 3], scale=0.05, zero_point=-2)
    y = b.tensor([1, 3, 3, 3], scale=0.05, zero_point=-2)     # TFLM requires equal params
    b.op("AVERAGE_POOL_2D", [x], [y], filter=(2, 2), stride=(2, 2))
    x_q = rng.integers(-128, 128, (1, 6, 6, 3)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    mean = x_q.astype(float).reshape(1, 3, 2, 3, 2, 3).mean(axis=(2, 4))
    assert_within_one_step(got, np.round(mean).astype(np.int8))


def test_max_pool_exact():
    rng = np.random.default_rng(RNG_SEED + 4)
    b = TfliteBuilder()
    x = b.tensor([1, 6, 6, 3], scale=0.05, zero_point=-2)
    y = b.tensor([1, 3, 3, 3], scale=0.05, zero_point=-2)
    b.op("MAX_POOL_2D", [x], [y], filter=(2, 2), stride=(2, 2), padding="VALID")
    x_q = rng.integers(-128, 128, (1, 6, 6, 3)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, x_q.reshape(1, 3, 2, 3, 2, 3).max(axis=(2, 4)))


def test_add_of_different_scales():
    rng = np.random.default_rng(RNG_SEED + 5)
    (s1, z1), (s2, z2), (s_out, z_out) = (0.05, -2), (0.1, 3), (0.12, 0)
    b = TfliteBuilder()
    x1 = b.tensor([1, 4, 4, 2], scale=s1, zero_point=z1)
    x2_q = rng.integers(-128, 128, (1, 4, 4, 2)).astype(np.int8)
    x2 = b.tensor([1, 4, 4, 2], scale=s2, zero_point=z2, data=x2_q)
    y = b.tensor([1, 4, 4, 2], scale=s_out, zero_point=z_out)
    b.op("ADD", [x1, x2], [y], activation="NONE")
    x1_q = rng.integers(-128, 128, (1, 4, 4, 2)).astype(np.int8)
    got = run_tflm(b.build([x1], [y]), x1_q)
    real = dequantize(x1_q, s1, z1) + dequantize(x2_q, s2, z2)
    assert_within_one_step(got, quantize(real, s_out, z_out))


def test_reshape_exact():
    b = TfliteBuilder()
    x = b.tensor([1, 2, 3, 4], scale=0.05, zero_point=-2)
    y = b.tensor([1, 24], scale=0.05, zero_point=-2)
    b.op("RESHAPE", [x], [y], new_shape=[1, 24])
    x_q = np.arange(-12, 12, dtype=np.int8).reshape(1, 2, 3, 4)
    got = run_tflm(b.build([x], [y]), x_q)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, x_q.reshape(1, 24))


def test_softmax():
    b = TfliteBuilder()
    x = b.tensor([3, 10], scale=0.1, zero_point=3)
    y = b.tensor([3, 10], scale=1 / 256, zero_point=-128)
    b.op("SOFTMAX", [x], [y], beta=1.0)
    x_q = np.random.default_rng(RNG_SEED + 6).integers(-128, 128, (3, 10)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    real = np.exp(dequantize(x_q, 0.1, 3))
    real /= real.sum(axis=-1, keepdims=True)
    assert_within_one_step(got, quantize(real, 1 / 256, -128))


@pytest.mark.parametrize("keep_dims", [True, False])
def test_mean_over_h_w(keep_dims):
    rng = np.random.default_rng(RNG_SEED + 7)
    (s_in, z_in), (s_out, z_out) = (0.05, -2), (0.04, 1)
    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 3], scale=s_in, zero_point=z_in)
    axes = b.tensor([2], "int32", data=np.array([1, 2]))
    y = b.tensor([1, 1, 1, 3] if keep_dims else [1, 3], scale=s_out, zero_point=z_out)
    b.op("MEAN", [x, axes], [y], keep_dims=keep_dims)
    x_q = rng.integers(-128, 128, (1, 4, 4, 3)).astype(np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    real = dequantize(x_q, s_in, z_in).mean(axis=(1, 2), keepdims=keep_dims)
    assert_within_one_step(got, quantize(real, s_out, z_out))


def test_quantize_dequantize_round_trip():
    scale, zero_point = np.float32(0.05), -2
    b = TfliteBuilder()
    x = b.tensor([1, 5], "float32")
    q = b.tensor([1, 5], scale=scale, zero_point=zero_point)
    y = b.tensor([1, 5], "float32")
    b.op("QUANTIZE", [x], [q])
    b.op("DEQUANTIZE", [q], [y])
    x_f = np.array([[0.1, -1.01, 3.33, 100.0, -100.0]], np.float32)
    got = run_tflm(b.build([x], [y]), x_f)
    expected = (np.clip(np.round(x_f / scale) + zero_point, -128, 127) - zero_point) * scale
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_builtin_without_options():
    b = TfliteBuilder()
    x = b.tensor([1, 4], scale=0.05, zero_point=-2)
    y = b.tensor([1, 4], scale=1 / 128, zero_point=0)
    b.op("TANH", [x], [y])
    x_q = np.array([[-128, -2, 20, 127]], np.int8)
    got = run_tflm(b.build([x], [y]), x_q)
    assert got.shape == (1, 4) and got.dtype == np.int8
    assert got[0, 1] == 0 and got[0, 0] < 0 < got[0, 2] < got[0, 3]


def test_tflm_refusals():
    """What TensorFlow Lite Micro refuses: an op it does not register, a pool that would
    rescale, and an int8 input to a float-only kernel (refused at invoke, not at prepare)."""
    b = TfliteBuilder()
    x = b.tensor([1, 4], scale=0.05, zero_point=-2)
    y = b.tensor([1, 4], scale=0.05, zero_point=-2)
    b.op("LSH_PROJECTION", [x], [y])
    with pytest.raises(RuntimeError, match="allocate"):
        run_tflm(b.build([x], [y]), np.zeros((1, 4), np.int8))

    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 1], scale=0.05, zero_point=-2)
    y = b.tensor([1, 2, 2, 1], scale=0.1, zero_point=-2)
    b.op("AVERAGE_POOL_2D", [x], [y], filter=(2, 2), stride=(2, 2))
    with pytest.raises(RuntimeError, match="allocate"):
        run_tflm(b.build([x], [y]), np.zeros((1, 4, 4, 1), np.int8))

    b = TfliteBuilder()
    x = b.tensor([1, 4], scale=0.05, zero_point=-2)
    y = b.tensor([1, 4], scale=0.05, zero_point=-2)
    b.op("COS", [x], [y])
    with pytest.raises(RuntimeError, match="invocation"):
        run_tflm(b.build([x], [y]), np.zeros((1, 4), np.int8))


def test_run_tflm_checks_the_input():
    b = TfliteBuilder()
    x = b.tensor([2, 4], scale=0.05, zero_point=-2)
    y = b.tensor([2, 4], scale=0.05, zero_point=-2)
    b.op("RELU", [x], [y])
    model = b.build([x], [y])
    with pytest.raises(ValueError, match="type"):
        run_tflm(model, np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="Dimension"):
        run_tflm(model, np.zeros((3, 4), np.int8))


def test_builder_refusals():
    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 1], scale=0.05)
    y = b.tensor([1, 2, 2, 1], scale=0.05)
    with pytest.raises(ValueError, match="BuiltinOperator"):
        b.op("NOT_AN_OP", [x], [y])
    with pytest.raises(ValueError, match="takes no option beta"):
        b.op("MAX_POOL_2D", [x], [y], filter=(2, 2), beta=1.0)
    with pytest.raises(ValueError, match="needs the option filter"):
        b.op("MAX_POOL_2D", [x], [y])
    with pytest.raises(ValueError, match="padding='FULL'"):
        b.op("MAX_POOL_2D", [x], [y], filter=(2, 2), padding="FULL")
    with pytest.raises(ValueError, match="activation='TANH'"):
        b.op("ADD", [x, x], [y], activation="TANH")
    with pytest.raises(ValueError, match="does not fit"):
        b.tensor([2, 2], data=np.zeros(5))
    with pytest.raises(ValueError, match="zero points"):
        b.tensor([2], scale=[0.1, 0.2, 0.3], zero_point=[0, 1])
    with pytest.raises(TypeError, match="TensorType"):
        b.tensor([2], dtype=object)
