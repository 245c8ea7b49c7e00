"""``cnnforge.sim.softmax`` is bit-exact with TensorFlow Lite Micro's int8 SOFTMAX.

Each case builds one single-op model whose input is ``[ROWS, depth]`` (TFLite's softmax runs
along the last axis, every row independently), so one invoke checks ``ROWS`` rows: hand-picked
edge rows (all equal, the int8 extremes, differences at ``diff_min`` and one below it) and random
ones, over several input scales and betas. The same kernel with int16 output (TFLite's int8 →
int16 softmax) is checked too: an off-by-one in a Q0.31 constant rarely shows in 8 output bits,
but does in 16."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnforge.sim.softmax import (_softmax, count_leading_zeros, exp_on_negative_values,
                                  softmax_int8, softmax_params)
from tests.tflite_models import TfliteBuilder, run_tflm

ROWS = 256
DEPTHS = (1, 2, 10, 12, 37)
SCALES = (0.0039, 0.0787, 0.1447, 0.17185351, 0.5, 2.0)
# beta · scale ≥ 16 gives the left shift 31 and diff_min 0 (only the row maxima count), ≥ 32
# caps the real multiplier at 2^31 − 1; 1e-4 keeps every difference (diff_min below −255).
OTHER_CASES = ((0.0787, 0.5), (0.1447, 2.5), (0.5, 0.3), (20.0, 1.0), (0.5, 80.0), (1e-4, 1.0))


def softmax_model(shape, input_scale, beta=1.0, input_zero_point=0, output_dtype="int8"):
    """A single SOFTMAX: int8 input ``shape`` -> int8 output (scale 1/256, zero point −128) or
    int16 output (scale 1/65536, zero point −32768)."""
    bits = np.iinfo(output_dtype).bits
    b = TfliteBuilder()
    x = b.tensor(shape, scale=input_scale, zero_point=input_zero_point)
    y = b.tensor(shape, output_dtype, scale=2.0 ** -bits, zero_point=-(1 << (bits - 1)))
    b.op("SOFTMAX", [x], [y], beta=beta)
    return b.build([x], [y])


def softmax_rows(depth, diff_min, rng, count=ROWS):
    """``count`` int8 rows of ``depth``: edge cases first, then random rows."""
    rows = [np.full(depth, v) for v in (-128, -1, 0, 127)]
    rows.append(np.resize([-128, 127], depth))
    rows.append(np.where(np.arange(depth) == depth // 2, 127, -128))
    rows.append(np.where(np.arange(depth) == 0, -128, 127))
    for top in (127, -100):
        for diff in (diff_min, diff_min - 1, diff_min + 1):   # at, below and above diff_min
            if top + diff >= -128:
                rows.append(np.where(np.arange(depth) == 0, top, top + diff))
    rows = np.array(rows)
    n = count - len(rows)
    full = rng.integers(-128, 128, (n // 2, depth))
    top = rng.integers(-128, 128, (n - n // 2, 1))
    near = np.clip(top - rng.integers(0, max(1, min(-diff_min, 255)) + 2, (n - n // 2, depth)),
                   -128, 127)
    return np.concatenate([rows, full, near]).astype(np.int8)




def assert_bit_exact(x, input_scale, beta, input_zero_point=0, output_dtype="int8"):
    model = softmax_model(x.shape, input_scale, beta, input_zero_point, output_dtype)
    expected = run_tflm(model, x)
    if output_dtype == "int8":
        got = softmax_int8(x, *softmax_params(input_scale, beta))
    else:
        got = _softmax(x, *softmax_params(input_scale, beta), np.dtype(output_dtype))
    assert got.dtype == output_dtype and got.shape == x.shape
    bad = np.argwhere((got != expected).reshape(-1, x.shape[-1]).any(axis=-1)).ravel()
    assert bad.size == 0, (
        f"{bad.size} rows of {len(got.reshape(-1, x.shape[-1]))} differ; first: input "
        f"{x.reshape(-1, x.shape[-1])[bad[0]].tolist()} -> {got.reshape(-1, x.shape[-1])[bad[0]]}"
        f", TFLM {expected.reshape(-1, x.shape[-1])[bad[0]]}")


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("input_scale, beta",
                         [(s, 1.0) for s in SCALES] + list(OTHER_CASES))
def test_bit_exact_with_tflm(input_scale, beta, depth):
    rng = np.random.default_rng([depth, int(input_scale * 1e8), int(beta * 10)])
    diff_min = softmax_params(input_scale, beta)[2]
    assert_bit_exact(softmax_rows(depth, diff_min, rng), input_scale, beta, input_zero_point=-7)


@pytest.mark.parametrize("depth", (1, 10, 37))
@pytest.mark.parametrize("input_scale, beta",
                         [(s, 1.0) for s in SCALES] + list(OTHER_CASES))
def test_bit_exact_with_tflm_int16_output(input_scale, beta, depth):
    rng = np.random.default_rng([depth, int(input_scale * 1e8), int(beta * 10), 16])
    diff_min = softmax_params(input_scale, beta)[2]
    assert_bit_exact(softmax_rows(depth, diff_min, rng), input_scale, beta, output_dtype="int16")


def test_bit_exact_on_4d_input():
    """Softmax runs along the last axis of an NHWC tensor."""
    x = np.random.default_rng(1).integers(-128, 128, (2, 4, 8, 10)).astype(np.int8)
    assert_bit_exact(x, 0.17185351, 1.0)


def test_bit_exact_up_to_depth_511():
    """Rows of equal values: the sum of exponentials equals the depth, up to 511 (the largest
    TFLite Micro accepts)."""
    x = np.zeros((3, 511), np.int8)
    x[1] = 127
    x[2, ::2] = -128
    assert_bit_exact(x, 0.0039, 1.0)


@settings(max_examples=60, deadline=None)
@given(log2_scale=st.floats(-20, 6), beta=st.sampled_from([0.25, 1.0, 1.7]),
       depth=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_bit_exact_random_scales(log2_scale, beta, depth, seed):
    input_scale = float(np.float32(2.0 ** log2_scale))
    rng = np.random.default_rng(seed)
    x = softmax_rows(depth, softmax_params(input_scale, beta)[2], rng, count=64)
    assert_bit_exact(x, input_scale, beta)


def test_params_by_hand():
    # 0.5 · 2^26 = 0.5 · 2^26: multiplier 2^30, shift 26, radius floor(31 · 2^26 / 2^26) = 31.
    assert softmax_params(0.5) == (1 << 30, 26, -31)
    # 2.0 · 2^26 = 0.5 · 2^28: radius floor(31 / 4) = 7.
    assert softmax_params(2.0) == (1 << 30, 28, -7)
    # 20 · 2^26 = 0.625 · 2^31: shift 31, radius floor(31 / 32) = 0.
    assert softmax_params(20.0) == (1342177280, 31, 0)
    # 40 · 2^26 is capped at 2^31 − 1 = (1 − 2^−31) · 2^31.
    assert softmax_params(40.0) == ((1 << 31) - 1, 31, 0)
    assert softmax_params(0.5, beta=80.0) == ((1 << 31) - 1, 31, 0)
    # The scale is a float32: 0.1 is 0.100000001490116...
    assert softmax_params(0.1) == softmax_params(float(np.float32(0.1)))


def test_fixed_point_pieces():
    assert count_leading_zeros(np.array([0, 1, 2**19, 2**31 - 1, 2**31, 2**32 - 1])).tolist() \
        == [32, 31, 12, 1, 0, 0]
    # exp(0) = One() (INT32_MAX), exp(−1/4) and exp(−1) in Q0.31 from Q5.26.
    e = exp_on_negative_values(np.array([0, -(1 << 24), -(1 << 26)]))
    assert e[0] == 2**31 - 1
    np.testing.assert_allclose(e[1:] / 2**31, np.exp([-0.25, -1.0]), rtol=1e-6)


def test_refusals():
    with pytest.raises(TypeError, match="int8"):
        softmax_int8(np.zeros(4, np.int16), *softmax_params(0.1))
    with pytest.raises(ValueError, match="depth"):
        softmax_int8(np.zeros((3, 0), np.int8), *softmax_params(0.1))
    # TFLite Micro aborts the process on these (TFLITE_CHECK): we raise instead.
    with pytest.raises(ValueError, match="2\\^-26"):
        softmax_params(1e-8)
    with pytest.raises(OverflowError, match="512"):
        softmax_int8(np.zeros((1, 512), np.int8), *softmax_params(0.1))


def test_tflm_aborts_where_we_raise():
    """A row of 512 equal values: TFLite Micro's kernel aborts (SIGABRT) in a child process."""
    code = ("import numpy as np\n"
            "from tests.test_softmax import softmax_model\n"
            "from tests.tflite_models import run_tflm\n"
            "run_tflm(softmax_model([1, 512], 0.1), np.zeros((1, 512), np.int8))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                            capture_output=True, timeout=120)
    assert result.returncode != 0
