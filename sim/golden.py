"""Golden model: the bit-exact NumPy specification of what the hardware computes.

Float reference ops (``*_float``) give the accuracy baseline; integer ops implement the
integer-only inference contract of Jacob et al., "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, with gemmlowp's fixed-point
requantization (``gemmlowp/fixedpoint/fixedpoint.h``: ``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT``), as TFLite's int8 kernels do; a network imported from an ONNX QDQ model
instead requantizes as ONNX Runtime does, rounding the exact product once, ties to even
(``rounding="nearest-even"`` on its ops). Every integer function works in int64 internally and
spells out its rounding and saturation; the hardware must equal it bit for bit.

Layout is NCHW with a leading batch axis everywhere.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "pads", "conv2d_float", "linear_float", "max_pool2d", "avg_pool2d_float",
    "srdhm", "rounding_divide_by_pot", "round_shift_half_even", "requantize", "ROUNDINGS",
    "tflite_quantize_multiplier",
    "conv2d_acc", "linear_acc",
    "add_rescale", "add_quantized", "mean_multiplier",
    "run_quantized", "QuantizedResult",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ------------------------------------------------------------------------------------------------
# Float reference


def pads(padding):
    """``(top, left, bottom, right)`` of a padding given as ``(ph, pw)`` (the same on both
    sides, as ``torch.nn.Conv2d``) or as ``(top, left, bottom, right)`` (ONNX ``pads`` order;
    TFLite's SAME padding puts an odd row or column at the bottom or right).

    Raises
    ------
    ValueError
        For another length.
    """
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding + padding
    if len(padding) == 4:
        return padding
    raise ValueError(f"padding must be (ph, pw) or (top, left, bottom, right), got {padding}")


def _windows(x, kernel, stride, padding, fill):
    """(B, N, H, W) -> padded sliding windows (B, N, OH, OW, kh, kw) (a view, no copy of the
    window overlap); ``padding`` as :func:`pads` takes it."""
    (kh, kw), (sh, sw) = kernel, stride
    top, left, bottom, right = pads(padding)
    if top or left or bottom or right:
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _grouped(win, weight, groups):
    """Σ over (n, i, j) of windows (B, N, OH, OW, kh, kw) times weight (M, N/groups, kh, kw),
    each group of M/groups output channels reading its N/groups input channels."""
    if groups == 1:
        return np.einsum("bnhwij,mnij->bmhw", win, weight, optimize=True)
    b, n, oh, ow, kh, kw = win.shape
    m = weight.shape[0]
    win = win.reshape(b, groups, n // groups, oh, ow, kh, kw)
    w = weight.reshape(groups, m // groups, n // groups, kh, kw)
    y = np.einsum("bgnhwij,gmnij->bgmhw", win, w, optimize=True)
    return y.reshape(b, m, oh, ow)


def conv2d_float(x, weight, bias, stride=(1, 1), padding=(0, 0), groups=1):
    """Float 2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : ndarray, float, shape (B, N, H, W)
    weight : ndarray, float, shape (M, N // groups, kh, kw)
    bias : ndarray, float, shape (M,), or None
    stride : (int, int)
    padding : (int, int) or (top, left, bottom, right)
        See :func:`pads`.
    groups : int
        Grouped convolution (``groups = N = M``: depthwise).

    Returns
    -------
    ndarray, float32, shape (B, M, OH, OW), OH = (H + top + bottom − kh) // sh + 1
    """
    win = _windows(np.asarray(x, np.float64), weight.shape[2:], stride, padding, 0.0)
    y = _grouped(win, weight.astype(np.float64), groups)
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return y.astype(np.float32)


def linear_float(x, weight, bias):
    """``x Wᵀ + b``. x: (B, F) float; weight: (O, F); bias: (O,) or None -> (B, O) float32."""
    y = np.asarray(x, np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        y += bias
    return y.astype(np.float32)


def max_pool2d(x, kernel=(2, 2), stride=None):
    """Max pooling without padding, floor mode (``torch.nn.functional.max_pool2d``).

    Works for float and integer inputs alike (max commutes with the monotone requantization, so
    the quantized network pools its int8 values directly). x: (B, C, H, W) -> (B, C, OH, OW),
    same dtype.
    """
    stride = kernel if stride is None else stride
    return _windows(x, kernel, stride, (0, 0), 0).max(axis=(-2, -1))


def avg_pool2d_float(x, kernel, stride=None):
    """Average pooling without padding, floor mode (``torch.nn.functional.avg_pool2d``).
    x: (B, C, H, W) float -> (B, C, OH, OW) float32."""
    stride = kernel if stride is None else stride
    return _windows(np.asarray(x, np.float64), kernel, stride, (0, 0), 0.0).mean(
        axis=(-2, -1)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# gemmlowp fixed-point arithmetic


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul(a, b) of gemmlowp, element-wise.

    ``(a·b + nudge) / 2^31`` with C's truncating division, nudge = 2^30 if a·b ≥ 0 else
    1 − 2^30; saturates to INT32_MAX when a = b = INT32_MIN (the only overflow).

    Parameters
    ----------
    a, b : array_like of int32 values (any integer dtype), broadcastable

    Returns
    -------
    ndarray, int64, values in int32 range
    """
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b                                        # |a·b| <= 2^62: exact in int64
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))   # truncate toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """RoundingDivideByPOT(x, exponent) of gemmlowp: ``x / 2^exponent`` rounded to nearest,
    ties away from zero.

    Parameters
    ----------
    x : array_like of int32 values
    exponent : array_like of int in [0, 31], broadcastable with x

    Returns
    -------
    ndarray, int64
    """
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def round_shift_half_even(x, exponent):
    """``x / 2^exponent`` rounded to nearest, ties to even, in one step:
    ``(x + 2^(e−1) − 1 + bit_e(x)) >> e`` with an arithmetic (flooring) shift, where
    ``bit_e(x) = (x >> e) & 1`` is the parity of the floor quotient (IEEE 754's default
    rounding, ``nearbyintf`` in ONNX Runtime's requantization).

    Parameters
    ----------
    x : array_like of int, |x| < 2^62
    exponent : array_like of int in [1, 62], broadcastable with x

    Returns
    -------
    ndarray, int64
    """
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    return (x + (np.int64(1) << (e - 1)) - 1 + ((x >> e) & 1)) >> e


def tflite_quantize_multiplier(real):
    """TFLite's ``QuantizeMultiplier`` (``tensorflow/lite/kernels/internal/quantization_util.cc``,
    ``TFLITE_EMULATE_FLOAT`` undefined): ``real ≈ M0 · 2^(shift − 31)``.

    ``frexp`` gives ``real = q · 2^shift``, q in [0.5, 1); ``M0 = TfLiteRound(q · 2^31)``
    (``std::round``: half away from zero; ``q · 2^31`` is exact in double); an ``M0`` that
    rounds up to 2^31 is halved and ``shift`` incremented; 0, and a shift below −31, give
    ``(0, 0)``.

    Parameters
    ----------
    real : float
        Non-negative (a double, as TFLite computes it from float32 scales).

    Returns
    -------
    (int, int)
        ``(M0, shift)``, ``M0`` in [2^30, 2^31); a positive shift is a left shift (a
        multiplier ≥ 1).
    """
    if real == 0:
        return 0, 0
    q, shift = math.frexp(real)
    m0 = math.floor(q * (1 << 31) + 0.5)
    if m0 == 1 << 31:
        m0 //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m0, shift


ROUNDINGS = ("gemmlowp", "nearest-even")


def requantize(acc, multiplier, shift, zero_point, lo, hi, axis=1, rounding="gemmlowp"):
    """int32 accumulators -> int8 activations (Jacob et al. 2018, eq. 7).

    ``rounding="gemmlowp"`` (TFLite's ``MultiplyByQuantizedMultiplier`` for a right shift; the
    default, and the contract of networks quantized by cnnforge)::

        y = clamp(zero_point + RoundingDivideByPOT(SRDHM(acc, M0[m]), n[m]), lo, hi)

    rounds twice (SRDHM to 2^−31, then the shift; each ties away from zero).
    ``rounding="nearest-even"`` (networks imported from ONNX QDQ models: ONNX Runtime's
    ``MlasRequantizeOutput`` multiplies in float32 and rounds with ``nearbyintf``)::

        y = clamp(zero_point + round_shift_half_even(acc·M0[m], 31 + n[m]), lo, hi)

    rounds the exact product ``acc·M0·2^(−31−n)`` once, to nearest, ties to even.

    Parameters
    ----------
    acc : ndarray, int64 holding int32 values, shape (B, M, ...)
    multiplier : ndarray, int, shape (M,)
        ``M0`` in [2^30, 2^31) (or 0 for a channel whose real multiplier underflows).
    shift : ndarray, int, shape (M,)
        Right shift ``n`` in [0, 31]; the real multiplier is ``M0 · 2^(−31−n)``.
    zero_point : int
        Output zero point.
    lo, hi : int
        Clamp bounds (−128, 127 without activation; ReLU/ReLU6 raise lo/lower hi).
    axis : int
        Channel axis of ``acc``.
    rounding : ``"gemmlowp"`` or ``"nearest-even"``

    Returns
    -------
    ndarray, int8, same shape as acc

    Raises
    ------
    ValueError
        For another ``rounding``.
    """
    shape = [1] * acc.ndim
    shape[axis] = -1
    m0 = np.asarray(multiplier, np.int64).reshape(shape)
    n = np.asarray(shift, np.int64).reshape(shape)
    if rounding == "gemmlowp":
        y = rounding_divide_by_pot(srdhm(acc, m0), n)
    elif rounding == "nearest-even":
        y = round_shift_half_even(np.asarray(acc, np.int64) * m0, 31 + n)   # |acc·M0| < 2^62
    else:
        raise ValueError(f"rounding={rounding!r}: choose one of {', '.join(ROUNDINGS)}")
    return np.clip(y + zero_point, lo, hi).astype(np.int8)


def mean_multiplier(count):
    """The requantization multiplier ``M0`` (with shift 0) that turns a sum of ``count`` int8
    values into TFLite's rounded mean (``reference_integer_ops::AveragePool``:
    ``acc > 0 ? (acc + count/2) / count : (acc − count/2) / count`` in C: to nearest, ties away
    from zero).

    ``M0 = ⌊2^31 / count⌋ + 1`` (``2^31 − 1`` for a count of 1): SRDHM(acc, M0) rounds
    ``acc·M0 / 2^31`` once, and ``acc·M0 / 2^31 − acc / count`` lies strictly between 0 and
    ``acc / 2^31`` in the direction of ``acc``'s sign, i.e. below ``128·count / 2^31 <
    1 / (2·count)`` for |acc| ≤ 128·count and count < 2896: a non-tie (at least ``1/(2·count)``
    from a tie) rounds as the exact mean does, a tie is pushed away from zero. Checked
    exhaustively by the tests.

    Parameters
    ----------
    count : int
        Values per window, 1 ≤ count < 2896.

    Returns
    -------
    int
        ``M0`` in [1, 2^31).

    Raises
    ------
    ValueError
        Outside that range.
    """
    if not 1 <= count < 2896:
        raise ValueError(f"average over {count} values: 1 to 2895 are supported")
    return (1 << 31) - 1 if count == 1 else (1 << 31) // count + 1


def conv2d_acc(x, weight, bias, stride, padding, input_zero_point, groups=1):
    """int32 accumulators of a quantized convolution (before requantization).

    ``acc[b, m, y, x] = Σ_{n,i,j} w[m,n,i,j] · xpad[b, n, y·sh+i, x·sw+j] + bias[m]``, where
    ``xpad`` is padded with the input zero point and ``bias`` already holds
    ``q_bias − z_in·Σ w`` (the zero point folded in at compile time, Jacob et al. 2018 §2.3).

    Parameters
    ----------
    x : ndarray, int8, shape (B, N, H, W)
    weight : ndarray, int8, shape (M, N // groups, kh, kw), values in [−127, 127]
    bias : ndarray, int32, shape (M,)
    stride : (int, int)
    padding : (int, int) or (top, left, bottom, right)
        See :func:`pads`.
    input_zero_point : int
    groups : int
        Grouped convolution (depthwise: ``groups = N = M``; the sum runs over the group's
        input channels only).

    Returns
    -------
    ndarray, int64, shape (B, M, OH, OW), values in int32 range

    Raises
    ------
    OverflowError
        If an accumulator leaves the int32 range (the compiler prevents this).
    """
    win = _windows(np.asarray(x, np.int64), weight.shape[2:], stride, padding,
                   int(input_zero_point))
    acc = _grouped(win, weight.astype(np.int64), groups)
    acc += np.asarray(bias, np.int64)[None, :, None, None]
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("accumulator leaves the int32 range")
    return acc


def linear_acc(x, weight, bias):
    """int32 accumulators of a quantized Linear: x (B, F) int8, weight (O, F) int8, bias (O,)
    int32 with the input zero point folded in -> (B, O) int64."""
    acc = np.asarray(x, np.int64) @ weight.astype(np.int64).T + np.asarray(bias, np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("accumulator leaves the int32 range")
    return acc


ADD_LEFT_SHIFT = 20


def add_rescale(x, zero_point, multiplier, shift):
    """One input of TFLite's int8 add, rescaled to the common scale:
    ``RoundingDivideByPOT(SRDHM((x − z)·2^20, M0), n)``
    (``tflite/kernels/internal/reference/integer_ops/add.h``; ``M0·2^(−31−n)`` is
    ``s_x / (2·max(s_1, s_2))``). x: int8 array -> int64 array of the same shape (|value| <
    2^28)."""
    shifted = (np.asarray(x, np.int64) - zero_point) * (1 << ADD_LEFT_SHIFT)
    return rounding_divide_by_pot(srdhm(shifted, multiplier), shift)


def add_quantized(x1, x2, op):
    """TFLite's int8 add of two tensors: each input rescaled by :func:`add_rescale`, summed,
    and requantized to the output by :func:`requantize` (per-tensor multiplier, the op's
    ``rounding``, clamped to the fused activation). ``op`` is an ``"add"`` QuantOp (``input_zero_point``,
    ``input2_zero_point``, ``add_multiplier``, ``add_shift``, ``multiplier``, ``shift``,
    ``output_zero_point``, ``act_min``, ``act_max``)."""
    acc = (add_rescale(x1, op.input_zero_point, op.add_multiplier[0], op.add_shift[0])
           + add_rescale(x2, op.input2_zero_point, op.add_multiplier[1], op.add_shift[1]))
    return requantize(acc, op.multiplier[0], op.shift[0], op.output_zero_point, op.act_min,
                      op.act_max, rounding=op.rounding)


# ------------------------------------------------------------------------------------------------
# The quantized network


class QuantizedResult(list):
    """Output of :func:`run_quantized`: one int8 tensor per quantized op, in order, plus the
    quantized input as ``.input``. ``result[-1]`` is the logits tensor."""


def run_op(op, x, *more):
    """Run one quantized op (see ``cnnforge.hw.frontend.quantize``) on an int8 batch ``x`` (an
    ``"add"`` takes its second input as a further argument)."""
    kind = op.kind
    if kind == "add":
        return add_quantized(x, more[0], op)
    if kind == "conv":      # Conv2d, depthwise included, and AvgPool2d (all-ones weights)
        acc = conv2d_acc(x, op.weight, op.bias, op.stride, op.padding, op.input_zero_point,
                         op.groups)
        return requantize(acc, op.multiplier, op.shift, op.requant_offset, op.act_min,
                          op.act_max, rounding=op.rounding)
    if kind == "linear":
        acc = linear_acc(x, op.weight, op.bias)
        return requantize(acc, op.multiplier, op.shift, op.requant_offset, op.act_min,
                          op.act_max, rounding=op.rounding)
    if kind == "maxpool":
        y = max_pool2d(x, op.kernel_size, op.stride)
        return np.clip(y, op.act_min, op.act_max).astype(np.int8)
    if kind == "flatten":
        return np.clip(x.reshape(x.shape[0], -1), op.act_min, op.act_max).astype(np.int8)
    raise ValueError(f"unknown quantized op kind {kind!r}")


def run_quantized(qnet, x_q):
    """Integer-only forward pass of a quantized network, op by op.

    Parameters
    ----------
    qnet : cnnforge.hw.frontend.quantize.QuantizedNetwork
    x_q : ndarray, int8, shape (B, C, H, W)
        Input already quantized with ``qnet.input_scale`` / ``qnet.input_zero_point``
        (see ``QuantizedNetwork.quantize_input``).

    Returns
    -------
    QuantizedResult
        Every op's int8 output (shapes as in ``qnet.ops[i].output_shape`` with the batch axis).
    """
    x = np.asarray(x_q)
    if x.dtype != np.int8:
        raise TypeError(f"run_quantized expects int8 input, got {x.dtype}")
    result = QuantizedResult()
    result.input = x
    for index, op in enumerate(qnet.ops):
        inputs = op.inputs if op.inputs is not None else [index - 1]
        result.append(run_op(op, *(x if i < 0 else result[i] for i in inputs)))
    return result
