"""Systolic PE array (``cnnforge.hw.rtl.pe_array``): ``rtl_gemm`` against NumPy ``W @ X``, exactly.

The array takes one reduction step k per beat; passes run back to back and each pass's results
are read during the drain window that follows its ``done`` pulse, as the accelerator's drainer
does. The accumulator width is derived as in :func:`cnnforge.hw.compiler.program.compile_network`.
"""

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Fragment, UnusedElaboratable
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnforge.hw.rtl.pe_array import SystolicArray
from cnnforge.sim.rtl import rtl_gemm

SIZES = [(1, 1), (1, 4), (3, 2), (2, 5), (4, 4), (8, 8)]


def acc_width_for(k):
    """As the compiler derives it: enough for K products of magnitude ≤ 128·127, signed."""
    return (k * 128 * 127).bit_length() + 1


def golden_gemm(weights, inputs):
    """(P, R, K) @ (P, K, C) -> (P, R, C) in int64."""
    return np.einsum("prk,pkc->prc", weights.astype(np.int64), inputs.astype(np.int64))


def random_operands(rng, passes, rows, cols, k):
    """int8 weights in [−127, 127] (the quantizer's range) and inputs in [−128, 127]."""
    w = rng.integers(-127, 128, (passes, rows, k)).astype(np.int8)
    x = rng.integers(-128, 128, (passes, k, cols)).astype(np.int8)
    return w, x


def check(weights, inputs, rows, cols, bubbles=0, acc_width=None, product_registers=1):
    k = weights.shape[2]
    acc_width = acc_width_for(k) if acc_width is None else acc_width
    got = rtl_gemm(weights, inputs, rows, cols, acc_width=acc_width, bubbles=bubbles,
                   product_registers=product_registers)
    expected = golden_gemm(weights, inputs)
    assert got.shape == expected.shape
    bad = np.argwhere(got != expected)
    assert bad.size == 0, (f"{len(bad)} wrong results, first at (pass, r, c) = "
                           f"{tuple(bad[0])}: got {got[tuple(bad[0])]}, "
                           f"expected {expected[tuple(bad[0])]}")


# ------------------------------------------------------------------------------------------------
# Hand-picked cases


@pytest.mark.parametrize("rows, cols", SIZES, ids=[f"{r}x{c}" for r, c in SIZES])
@pytest.mark.parametrize("k", [1, 2, 9, 40])
def test_sizes_random(rows, cols, k):
    """Every required array size elaborates and computes several passes back to back."""
    rng = np.random.default_rng(rows * 1000 + cols * 100 + k)
    w, x = random_operands(rng, 3, rows, cols, k)
    check(w, x, rows, cols)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 2), (8, 8)])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_accumulator_width_extremes(rows, cols, k):
    """All-max operands reach ±K·128·127, the bound the compiler sizes the accumulator for:
    pass 0 all at +K·127·128 (−127·−128), pass 1 all at −K·127·128 (127·−128), pass 2 a
    checkerboard of both, pass 3 alternating signs along k (cancels: tests the sign carry)."""
    ones_w = np.ones((rows, k), np.int64)
    ones_x = np.ones((k, cols), np.int64)
    w = np.stack([-127 * ones_w, 127 * ones_w,
                  np.where(np.arange(rows)[:, None] % 2, 127, -127) * ones_w,
                  np.where(np.arange(k)[None, :] % 2, 127, -127) * ones_w])
    x = np.stack([-128 * ones_x, -128 * ones_x, -128 * ones_x, -128 * ones_x])
    w, x = w.astype(np.int8), x.astype(np.int8)
    expected = golden_gemm(w, x)
    assert expected[0].min() == k * 128 * 127 and expected[1].max() == -k * 128 * 127
    check(w, x, rows, cols)


def test_accumulator_width_is_tight():
    """The derived width is exactly enough: the all-max sum of K = 40 needs every bit (the
    check would fail with one bit less, so the test above really exercises the width)."""
    k = 40
    width = acc_width_for(k)
    assert k * 128 * 127 < 1 << (width - 1)
    assert k * 128 * 127 >= 1 << (width - 2)


@pytest.mark.parametrize("bubbles", [1, 3, 50])
def test_bubbles(bubbles):
    """Idle beats after each pass (a pass longer than K) do not disturb the sums; with 50
    bubbles the pass is longer than the R·C + 1 minimum."""
    rng = np.random.default_rng(bubbles)
    w, x = random_operands(rng, 4, 3, 2, 5)
    check(w, x, 3, 2, bubbles=bubbles)


def test_minimum_inputs():
    """−128 on every input, ±127 weights mixed, K not a multiple of anything."""
    rng = np.random.default_rng(7)
    w = rng.choice(np.array([-127, 127], np.int8), (2, 4, 13))
    x = np.full((2, 13, 4), -128, np.int8)
    check(w, x, 4, 4)


def test_zero_and_identity():
    """Zero weights give zeros; a single-step pass (K = 1) gives the outer product."""
    w = np.zeros((2, 2, 5), np.int8)
    x = np.full((2, 5, 5), 127, np.int8)
    check(w, x, 2, 5)
    w1 = np.array([[[3], [-5]]], np.int8)
    x1 = np.array([[[1, -2, 127, -128, 0]]], np.int8)
    assert np.array_equal(rtl_gemm(w1, x1, 2, 5, acc_width=acc_width_for(1)),
                          np.outer([3, -5], [1, -2, 127, -128, 0])[None])


def test_many_passes_back_to_back():
    """Ten passes with different data: no pass leaks into the next (``first`` resets)."""
    rng = np.random.default_rng(11)
    w, x = random_operands(rng, 10, 2, 3, 8)
    check(w, x, 2, 3)


# ------------------------------------------------------------------------------------------------
# Random shapes


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 8), cols=st.integers(1, 8), k=st.integers(1, 40),
       passes=st.integers(1, 4), bubbles=st.sampled_from([0, 0, 1, 2, 5]),
       products=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**32 - 1))
def test_random_shapes(rows, cols, k, passes, bubbles, products, seed):
    """Random sizes, reductions and bubbles, one, two or three product registers per PE."""
    w, x = random_operands(np.random.default_rng(seed), passes, rows, cols, k)
    check(w, x, rows, cols, bubbles=bubbles, product_registers=products)


# ------------------------------------------------------------------------------------------------
# Constructor


@pytest.mark.parametrize("rows, cols", [(0, 4), (4, 0), (0, 0), (-1, 2)])
def test_constructor_refuses_empty_array(rows, cols):
    with warnings.catch_warnings():
        # the refused object exists (Elaboratable.__new__ ran) and is collected unused
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=rf"array must be at least 1x1, got {rows}x{cols}"):
            SystolicArray(rows, cols, 16)
        gc.collect()


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 5), (8, 8)])
@pytest.mark.parametrize("products", [1, 2, 3])
def test_parameters_and_latency(rows, cols, products):
    array = SystolicArray(rows, cols, 20, product_registers=products)
    assert (array.rows, array.cols, array.acc_width) == (rows, cols, 20)
    assert array.latency == rows + cols + products
    Fragment.get(array, None)                # elaborates (and marks the component used)


@pytest.mark.parametrize("rows, cols, k", [(1, 1, 1), (3, 2, 7), (8, 8, 65)])
@pytest.mark.parametrize("products", [2, 3])
def test_more_product_registers(rows, cols, k, products):
    """``product_registers`` 2 and 3 (ECP5: the DSP block's input registers as well): the same
    sums a cycle or two later, passes back to back at the shortest pass (R·C + 1 beats) with
    the int8 extremes."""
    rng = np.random.default_rng(rows * 100 + cols + k)
    w, x = random_operands(rng, 3, rows, cols, k)
    w[0], x[0] = -127, -128
    check(w, x, rows, cols, product_registers=products)


@pytest.mark.parametrize("rows, cols, k", [(1, 1, 9), (2, 2, 12), (4, 2, 12), (3, 5, 7),
                                           (4, 4, 18)])
@pytest.mark.parametrize("bubbles", [0, 3])
def test_row_inputs(rows, cols, k, bubbles):
    """The depthwise row mapping's inputs (``x_rows``, ``x_from_rows``): PE (r, c) multiplies
    the weight of beat k by row r's value of beat k + c (broadcast along the row, skewed by
    the row only), passes back to back, all-extreme operands included (with bubbles, two
    product registers per PE)."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + k + bubbles)
    passes = 4
    beats = max(k + bubbles, rows * cols + 1)
    w = rng.integers(-127, 128, (passes, rows, k)).astype(np.int8)
    w[0] = -127
    stream = rng.integers(-128, 128, (passes * beats + cols, rows)).astype(np.int8)
    stream[:beats] = -128
    x = np.zeros((passes, k, cols), np.int8)
    got = rtl_gemm(w, x, rows, cols, acc_width=acc_width_for(k), bubbles=bubbles,
                   row_stream=stream, product_registers=1 + bubbles % 2)
    expected = np.zeros((passes, rows, cols), np.int64)
    for p in range(passes):
        for c in range(cols):
            seen = stream[p * beats + c:p * beats + c + k].astype(np.int64)     # (k, rows)
            expected[p, :, c] = np.einsum("rk,kr->r", w[p].astype(np.int64), seen)
    assert np.array_equal(got, expected)
