"""Golden model: the bit-exact NumPy specification of what the hardware computes.

Float reference ops (``*_float``) give the accuracy baseline; integer ops implement the
integer-only inference contract of Jacob et al., "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, with gemmlowp's fixed-point
requantization (``gemmlowp/fixedpoint/fixedpoint.h``: ``SaturatingRoundingDoublingHighMul`` and
``RoundingDivideByPOT``), as TFLite's int8 kernels do. Every integer function works in int64
internally and spells out its rounding and saturation; the hardware must equal it bit for bit.

Layout is NCHW with a leading batch axis everywhere.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "conv2d_float", "linear_float", "max_pool2d",
    "srdhm", "rounding_divide_by_pot", "requantize", "conv2d_acc", "linear_acc",
    "run_quantized", "QuantizedResult",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ------------------------------------------------------------------------------------------------
# Float reference


def _windows(x, kernel, stride, padding, fill):
    """(B, N, H, W) -> padded sliding windows (B, N, OH, OW, kh, kw) (a view, no copy of the
    window overlap)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def conv2d_float(x, weight, bias, stride=(1, 1), padding=(0, 0)):
    """Float 2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : ndarray, float, shape (B, N, H, W)
    weight : ndarray, float, shape (M, N, kh, kw)
    bias : ndarray, float, shape (M,), or None
    stride, padding : (int, int)

    Returns
    -------
    ndarray, float32, shape (B, M, OH, OW), OH = (H + 2·ph − kh) // sh + 1
    """
    win = _windows(np.asarray(x, np.float64), weight.shape[2:], stride, padding, 0.0)
    y = np.einsum("bnhwij,mnij->bmhw", win, weight.astype(np.float64), optimize=True)
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


def requantize(acc, multiplier, shift, zero_point, lo, hi, axis=1):
    """int32 accumulators -> int8 activations (Jacob et al. 2018, eq. 7; TFLite's
    ``MultiplyByQuantizedMultiplier`` for a right shift).

    ``y = clamp(zero_point + RoundingDivideByPOT(SRDHM(acc, M0[m]), n[m]), lo, hi)``

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

    Returns
    -------
    ndarray, int8, same shape as acc
    """
    shape = [1] * acc.ndim
    shape[axis] = -1
    m0 = np.asarray(multiplier, np.int64).reshape(shape)
    n = np.asarray(shift, np.int64).reshape(shape)
    y = rounding_divide_by_pot(srdhm(acc, m0), n) + zero_point
    return np.clip(y, lo, hi).astype(np.int8)


def conv2d_acc(x, weight, bias, stride, padding, input_zero_point):
    """int32 accumulators of a quantized convolution (before requantization).

    ``acc[b, m, y, x] = Σ_{n,i,j} w[m,n,i,j] · xpad[b, n, y·sh+i, x·sw+j] + bias[m]``, where
    ``xpad`` is padded with the input zero point and ``bias`` already holds
    ``q_bias − z_in·Σ w`` (the zero point folded in at compile time, Jacob et al. 2018 §2.3).

    Parameters
    ----------
    x : ndarray, int8, shape (B, N, H, W)
    weight : ndarray, int8, shape (M, N, kh, kw), values in [−127, 127]
    bias : ndarray, int32, shape (M,)
    stride, padding : (int, int)
    input_zero_point : int

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
    acc = np.einsum("bnhwij,mnij->bmhw", win, weight.astype(np.int64), optimize=True)
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


# ------------------------------------------------------------------------------------------------
# The quantized network


class QuantizedResult(list):
    """Output of :func:`run_quantized`: one int8 tensor per quantized op, in order, plus the
    quantized input as ``.input``. ``result[-1]`` is the logits tensor."""


def run_op(op, x):
    """Run one quantized op (see ``cnnforge.hw.quantize``) on an int8 batch ``x``."""
    kind = op.kind
    if kind == "conv":
        acc = conv2d_acc(x, op.weight, op.bias, op.stride, op.padding, op.input_zero_point)
        return requantize(acc, op.multiplier, op.shift, op.output_zero_point, op.act_min,
                          op.act_max)
    if kind == "linear":
        acc = linear_acc(x, op.weight, op.bias)
        return requantize(acc, op.multiplier, op.shift, op.output_zero_point, op.act_min,
                          op.act_max)
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
    qnet : cnnforge.hw.quantize.QuantizedNetwork
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
    for op in qnet.ops:
        x = run_op(op, x)
        result.append(x)
    return result
