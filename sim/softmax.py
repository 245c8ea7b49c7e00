"""TensorFlow Lite Micro's int8 → int8 SOFTMAX, bit-exact, in NumPy.

The specification of the quantized softmax the hardware must equal, transcribed from

* ``tensorflow/lite/micro/kernels/softmax_common.cc`` (``CalculateSoftmaxParams``: the
  parameters, computed once from the input scale and ``beta``) and
  ``tensorflow/lite/micro/kernels/softmax.cc`` (int8 input, int8 output: the reference kernel);
* ``tensorflow/lite/kernels/internal/reference/softmax.h`` (``reference_ops::Softmax``, the
  integer kernel for int8 input and output);
* ``tensorflow/lite/kernels/internal/quantization_util.cc`` (``PreprocessSoftmaxScaling``,
  ``QuantizeMultiplier``, ``CalculateInputRadius``);
* ``tensorflow/lite/kernels/internal/common.h`` (``MultiplyByQuantizedMultiplierGreaterThanOne``
  in its default double-rounding form, ``TFLITE_SINGLE_ROUNDING`` undefined;
  ``CountLeadingZeros``; ``GetReciprocal``);
* gemmlowp's ``fixedpoint/fixedpoint.h`` (``SaturatingRoundingDoublingHighMul``,
  ``RoundingDivideByPOT``, ``SaturatingRoundingMultiplyByPOT``, ``Rescale``,
  ``RoundingHalfSum``, ``exp_on_interval_between_negative_one_quarter_and_0_excl``,
  ``exp_on_negative_values``, ``one_over_one_plus_x_for_x_in_0_1``), the generic scalar
  ``int32_t`` versions (the SIMD specialisations compute the same).

The algorithm, per row of ``depth`` values (Jacob et al., CVPR 2018, integer-only inference):
the differences ``x − max(row)`` (int, ≤ 0) at or above ``diff_min`` are scaled to Q5.26
(``input_multiplier · 2^input_left_shift ≈ s_in · beta · 2^26``), their exponentials computed in
Q0.31 and summed in Q12.19; the reciprocal of the sum is taken by Newton–Raphson in Q0.31 after
normalising the sum to [1, 2); each output is ``exp · reciprocal`` shifted to the output scale
1/256 and offset by the zero point −128. Differences below ``diff_min`` give −128 (their
exponential does not count towards the sum).

Every function works on int64 arrays holding int32 values and spells out its rounding and
saturation; fixed-point formats are written ``Qm.n`` (m integer bits besides the sign, n = 31 − m
fractional bits), as in gemmlowp's ``FixedPoint<int32_t, m>``.
"""

from __future__ import annotations

import math

import numpy as np

from cnnforge.sim.golden import (INT32_MAX, INT32_MIN, rounding_divide_by_pot, srdhm,
                                  tflite_quantize_multiplier)

__all__ = [
    "softmax_params", "softmax_int8",
    "saturating_rounding_multiply_by_pot", "rescale", "rounding_half_sum",
    "exp_on_negative_values", "one_over_one_plus_x_for_x_in_0_1", "count_leading_zeros",
    "get_reciprocal", "multiply_by_quantized_multiplier_greater_than_one",
    "SCALED_DIFF_INTEGER_BITS", "ACCUMULATION_INTEGER_BITS",
]

SCALED_DIFF_INTEGER_BITS = 5        # kScaledDiffIntegerBits: the scaled differences are Q5.26
ACCUMULATION_INTEGER_BITS = 12      # kAccumulationIntegerBits: the sum of exponentials is Q12.19


# ------------------------------------------------------------------------------------------------
# Parameters (computed in double, as CalculateSoftmaxParams does)


def softmax_params(input_scale, beta=1.0):
    """Parameters of the int8 → int8 softmax, exactly as TFLite Micro's ``CalculateSoftmaxParams``
    (``softmax_common.cc``) computes them for int8 input and int8 output.

    ``PreprocessSoftmaxScaling(beta, input_scale, kScaledDiffIntegerBits = 5)``
    (``quantization_util.cc``)::

        real = min(beta · input_scale · 2^26, 2^31 − 1)              (in double)
        input_multiplier, input_left_shift = QuantizeMultiplierGreaterThanOne(real)

    and ``diff_min = −CalculateInputRadius(5, input_left_shift)``, with
    ``CalculateInputRadius = floor((2^5 − 1) · 2^26 / 2^input_left_shift)`` (total_signed_bits
    31): the most negative input difference whose scaled value still fits Q5.26.

    Parameters
    ----------
    input_scale : float
        Scale of the int8 input tensor; rounded to float32 first (TfLiteQuantizationParams
        holds a float), then widened to double.
    beta : float
        ``SoftmaxOptions.beta``; also a float32 in the model, widened to double.

    Returns
    -------
    input_multiplier : int
        In [2^30, 2^31).
    input_left_shift : int
        In [0, 31].
    diff_min : int
        ≤ 0.

    Raises
    ------
    ValueError
        If ``beta · input_scale · 2^26 ≤ 1`` (or is not finite): TFLite's
        ``QuantizeMultiplierGreaterThanOne`` aborts on it (``TFLITE_CHECK_GT``).
    """
    scale = float(np.float32(input_scale))
    beta = float(np.float32(beta))
    max_real_multiplier = float((1 << 31) - 1)
    real = min(beta * scale * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), max_real_multiplier)
    if not real > 1.0 or not math.isfinite(real):
        raise ValueError(
            f"beta · input_scale = {beta} · {scale} must exceed 2^-26: TFLite's "
            "QuantizeMultiplierGreaterThanOne refuses a softmax input multiplier of "
            f"{real} ≤ 1; raise the input scale or beta")
    input_multiplier, input_left_shift = tflite_quantize_multiplier(real)
    max_input_rescaled = (1.0 * ((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                          * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << input_left_shift))
    diff_min = -math.floor(max_input_rescaled)
    return input_multiplier, input_left_shift, diff_min


# ------------------------------------------------------------------------------------------------
# gemmlowp fixed-point primitives beyond golden.srdhm / golden.rounding_divide_by_pot
# (both gemmlowp-exact: SaturatingRoundingDoublingHighMul and RoundingDivideByPOT)


def saturating_rounding_multiply_by_pot(x, exponent):
    """``SaturatingRoundingMultiplyByPOT<exponent>(x)`` of gemmlowp: ``x · 2^exponent``.

    A positive exponent is a left shift saturating to int32: with
    ``threshold = 2^(31 − exponent) − 1``, ``x > threshold`` gives INT32_MAX and
    ``x < −threshold`` INT32_MIN. A negative exponent is ``RoundingDivideByPOT(x, −exponent)``
    (to nearest, ties away from zero). x: int64 array of int32 values; exponent: int in
    [−31, 30] (a compile-time constant in gemmlowp). Returns int64.
    """
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX,
                    np.where(x < -threshold, INT32_MIN, x * (1 << exponent)))


def rescale(x, src_integer_bits, dst_integer_bits):
    """``gemmlowp::Rescale<dst>(FixedPoint<int32_t, src>)``: the raw value times
    ``2^(src − dst)``, saturating (:func:`saturating_rounding_multiply_by_pot`)."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


def rounding_half_sum(a, b):
    """``RoundingHalfSum(a, b)`` of gemmlowp (int32): ``(a + b + sign) / 2`` in int64 with C's
    truncating division, ``sign = 1`` if ``a + b ≥ 0`` else −1 (half away from zero)."""
    total = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    nudged = total + np.where(total >= 0, 1, -1)
    return np.where(nudged >= 0, nudged // 2, -((-nudged) // 2))


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """``exp(a)`` for ``a`` in [−1/4, 0), Q0.31 in and out (gemmlowp): a Taylor expansion around
    −1/8 to fourth order, ``exp(−1/8) · (1 + x + x²/2 + x³/6 + x⁴/24)`` with ``x = a + 1/8``.
    Constants ``1895147668 ≈ exp(−1/8) · 2^31`` and ``715827883 ≈ 2^31 / 3``
    (``RescaleConstantInitializer`` leaves int32 constants unchanged). The additions are plain
    int32 adds (``AddSaturatingIf16Bit`` saturates only 16-bit types); none overflows on this
    interval."""
    constant_term = 1895147668
    constant_1_over_3 = 715827883
    x = a + (1 << 28)                                         # ConstantPOT<-3>: 1/8 in Q0.31
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    x4_over_24_plus_x3_over_6_plus_x2_over_2 = saturating_rounding_multiply_by_pot(
        srdhm(x4_over_4 + x3, constant_1_over_3) + x2, -1)
    return constant_term + srdhm(constant_term, x + x4_over_24_plus_x3_over_6_plus_x2_over_2)


# GEMMLOWP_EXP_BARREL_SHIFTER(Exponent, FixedPointMultiplier): exp(−2^Exponent) in Q0.31.
_EXP_BARREL_SHIFTER = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                       (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits=SCALED_DIFF_INTEGER_BITS):
    """``gemmlowp::exp_on_negative_values``: ``exp(a)`` for ``a ≤ 0``, from
    ``Q{integer_bits}`` to Q0.31.

    ``a`` is split as ``a = r − k/4`` with ``r = (a mod 1/4) − 1/4`` in [−1/4, 0) (``a & mask``
    on the two's-complement raw value, mask = 1/4 − ulp) and ``k/4 = r − a ≥ 0``; ``exp(r)``
    comes from the Taylor polynomial, then the barrel shifter multiplies (SRDHM) by
    ``exp(−2^e)`` for each set bit ``e`` (−2 … 4, those with ``e < integer_bits``) of
    ``k/4``. For ``integer_bits > 5`` values below −32 give 0; ``a = 0`` gives
    ``One() = INT32_MAX``.

    Parameters
    ----------
    a : array_like of int32 values, ≤ 0
        Raw ``FixedPoint<int32_t, integer_bits>``.
    integer_bits : int
        In [0, 29] (a template parameter in gemmlowp; the softmax uses 5).

    Returns
    -------
    ndarray, int64
        Raw Q0.31 values in [0, INT32_MAX].
    """
    a = np.asarray(a, np.int64)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)                  # ConstantPOT<-2>
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in _EXP_BARREL_SHIFTER:
        if integer_bits > exponent:
            shift_amount = fractional_bits + exponent
            result = np.where(remainder & (1 << shift_amount), srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))                   # −32 in Q{integer_bits}
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """``gemmlowp::one_over_one_plus_x_for_x_in_0_1``: ``1 / (1 + a)`` for ``a`` in [0, 1), Q0.31
    in and out.

    Newton–Raphson on the half denominator ``d = RoundingHalfSum(a, One())`` (Q0.31, in
    [1/2, 1)), in Q2.29: start ``x = 48/17 − 32/17 · d`` (constants 1515870810 and
    −1010580540), three iterations ``x += Rescale<2>(x · (1 − d·x))`` (the Q4.27 product
    rescaled to Q2.29 by a saturating left shift by 2), and the result
    ``Rescale<0>(ExactMulByPot<-1>(x))``: x/2 read as Q1.30, left-shifted by 1 with saturation.

    a: int64 array of raw Q0.31 values in [0, 2^31). Returns int64.
    """
    half_denominator = rounding_half_sum(a, INT32_MAX)          # F0::One() is INT32_MAX
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    one_q2 = 1 << 29                                            # F2::One(): 1.0 in Q2.29
    x = constant_48_over_17 + srdhm(half_denominator, constant_neg_32_over_17)
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)
        one_minus_half_denominator_times_x = one_q2 - half_denominator_times_x
        x = x + rescale(srdhm(x, one_minus_half_denominator_times_x), 4, 2)
    return rescale(x, 1, 0)


def count_leading_zeros(x):
    """``CountLeadingZeros(static_cast<uint32_t>(x))`` (common.h): leading zero bits of a 32-bit
    unsigned value, 32 for 0. x: int64 array of values in [0, 2^32). Returns int64.

    A binary search: shift left by 16, 8, 4, 2, 1 while the top bits are zero.
    """
    x = np.asarray(x, np.int64)
    count = np.zeros(x.shape, np.int64)
    shifted = x
    for step in (16, 8, 4, 2, 1):
        top_zero = shifted < (1 << (32 - step))
        count += np.where(top_zero, step, 0)
        shifted = np.where(top_zero, shifted << step, shifted)
    return np.where(x == 0, 32, count)


def get_reciprocal(x, x_integer_digits):
    """``GetReciprocal`` (common.h): ``1 / x`` for a positive ``FixedPoint<int32_t,
    x_integer_digits>``, as a Q0.31 mantissa and a power of two.

    ``headroom_plus_one = CountLeadingZeros(x)`` normalises ``x`` to ``1 + f``, f in [0, 1)
    (``(uint32(x) << headroom_plus_one) − 2^31`` in uint32 arithmetic, read back as int32);
    the mantissa is ``one_over_one_plus_x_for_x_in_0_1(f)`` ≈ ``1 / (1 + f)`` and
    ``num_bits_over_unit = x_integer_digits − headroom_plus_one``, so that
    ``1/x ≈ mantissa · 2^(−31 − num_bits_over_unit)`` in raw terms.

    Parameters
    ----------
    x : ndarray, int64, values in [1, 2^31)
    x_integer_digits : int

    Returns
    -------
    shifted_scale : ndarray, int64
        Raw Q0.31.
    num_bits_over_unit : ndarray, int64
    """
    x = np.asarray(x, np.int64)
    headroom_plus_one = count_leading_zeros(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    unsigned = ((x << headroom_plus_one) - (1 << 31)) & 0xFFFFFFFF    # uint32 arithmetic
    shifted_sum_minus_one = np.where(unsigned >= 1 << 31, unsigned - (1 << 32), unsigned)
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def multiply_by_quantized_multiplier_greater_than_one(x, quantized_multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierGreaterThanOne`` (common.h, double rounding as TFLite Micro
    builds it): ``SRDHM(x · 2^left_shift, quantized_multiplier)``. ``x · 2^left_shift`` is an
    int32 product in C; the caller keeps it in range (the softmax only passes differences
    ``≥ diff_min``, so ``|x| · 2^left_shift ≤ 31 · 2^26``). Returns int64."""
    return srdhm(np.asarray(x, np.int64) * (1 << left_shift), quantized_multiplier)


# ------------------------------------------------------------------------------------------------
# The kernel


def softmax_int8(x, input_multiplier, input_left_shift, diff_min):
    """TFLite Micro's int8 → int8 softmax along the last axis
    (``reference_ops::Softmax<int8_t, int8_t>``, ``reference/softmax.h``).

    Per row, with ``d = x − max(row)`` (int, ≤ 0) and only the entries with ``d ≥ diff_min``::

        e        = exp_on_negative_values(SRDHM(d · 2^input_left_shift, input_multiplier))
                                                                    Q5.26 → Q0.31
        sum      = Σ RoundingDivideByPOT(e, 12)                     Q12.19 (Rescale<12>)
        r, nbou  = GetReciprocal(sum, 12)
        y        = clamp(RoundingDivideByPOT(SRDHM(r, e), nbou + 23) − 128, −128, 127)

    and ``y = −128`` where ``d < diff_min``. The input zero point cancels in ``d``; the output
    scale is 1/256 and its zero point −128, as TFLite requires of an int8 softmax.

    Parameters
    ----------
    x : ndarray, int8, shape (..., depth), depth ≥ 1
    input_multiplier, input_left_shift, diff_min : int
        From :func:`softmax_params`.

    Returns
    -------
    ndarray, int8, same shape as x

    Raises
    ------
    TypeError
        If x is not int8.
    ValueError
        If x is 0-dimensional or has depth 0.
    OverflowError
        If a row's sum of exponentials reaches 512 (possible from depth 512 on, e.g. a row of
        equal values): the exponent ``num_bits_over_unit + 23`` exceeds 31 and TFLite Micro's
        kernel aborts the process (``TFLITE_CHECK(0 <= exponent && exponent <= 31)``); from
        depth 4096 on the Q12.19 sum can also leave int32 (undefined behaviour in C).
    """
    return _softmax(x, input_multiplier, input_left_shift, diff_min, np.int8)


def _softmax(x, input_multiplier, input_left_shift, diff_min, output_dtype):
    """``reference_ops::Softmax<int8_t, OutputT>``: :func:`softmax_int8` for ``output_dtype``
    int8, TFLite's int8 → int16 softmax (output scale 1/65536, zero point −32768, the same
    parameters) for int16. The tests use the latter too: its 16 output bits expose the
    fixed-point internals that 8 bits round away."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"softmax_int8 expects int8 input, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"softmax_int8 needs an input of shape (..., depth ≥ 1), got {x.shape}")
    info = np.iinfo(output_dtype)
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    input_diff = rows - rows.max(axis=-1, keepdims=True)
    counted = input_diff >= diff_min
    scaled_diff = multiply_by_quantized_multiplier_greater_than_one(
        np.where(counted, input_diff, 0), input_multiplier, input_left_shift)   # Q5.26
    exp_in_0 = exp_on_negative_values(scaled_diff, SCALED_DIFF_INTEGER_BITS)      # Q0.31
    sum_of_exps = np.where(counted, rescale(exp_in_0, 0, ACCUMULATION_INTEGER_BITS), 0).sum(
        axis=-1, keepdims=True)                                                   # Q12.19
    if sum_of_exps.max() > INT32_MAX:
        raise OverflowError("a row's Q12.19 sum of exponentials leaves int32 (depth ≥ 4096): "
                            "TFLite Micro's int8 softmax overflows and aborts on it")
    shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - info.bits
    if exponent.min() < 0 or exponent.max() > 31:
        raise OverflowError(
            "a row's sum of exponentials reaches 512: TFLite Micro's int8 softmax aborts on it "
            "(TFLITE_CHECK(0 <= exponent && exponent <= 31) in reference/softmax.h)")
    unsat_output = rounding_divide_by_pot(srdhm(shifted_scale, exp_in_0), exponent)
    shifted_output = unsat_output + info.min
    y = np.where(counted, np.clip(shifted_output, info.min, info.max), info.min)
    return y.astype(output_dtype).reshape(x.shape)
