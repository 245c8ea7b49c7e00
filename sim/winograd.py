"""Winograd F(2×2, 3×3) convolution in exact integer arithmetic (golden model).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016: a 2×2 output tile
of a 3×3, stride-1 convolution is ``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` from a 4×4 input tile d
(tiles overlap by 2), using 16 multiplications instead of 36. G holds halves; with ``G2 = 2·G``
(integer) the weight transform ``U = G2 g G2ᵀ = 4·G g Gᵀ`` is an integer and
``Aᵀ [Σ_n U ⊙ V] A = 4·Y`` exactly, so shifting right by 2 is exact (the remainder is always 0).

Bit widths, from the worst case of int8 inputs d ∈ [−128, 127] (padding holds the input zero
point, also int8) and weights g ∈ [−127, 127]:

=====================  ==========================================  ==========================
quantity               bound                                       signed bits
=====================  ==========================================  ==========================
V = Bᵀ d B             4 terms of ±d: [−512, 510]                  11
U = G2 g G2ᵀ           (row sums of |G2| ≤ 3)² · 127 = 1143         12
U·V                    1143 · 512 = 585,216                        21
M = Σ_n U·V            N · 585,216                                 21 + ceil(log2 N)
4Y = Aᵀ M A            9 terms of M, and = 4·Σ w·d ≤ 4·9N·128·127  see :func:`widths`
=====================  ==========================================  ==========================

The hardware (``hw/winograd.py``) uses exactly these transforms, so these functions are its
specification; :func:`conv2d_winograd_acc` equals :func:`cnnforge.sim.golden.conv2d_acc` for
every input.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BT", "G2", "AT", "weight_transform", "input_transform", "output_transform",
           "conv2d_winograd_acc", "widths"]

#: Input transform Bᵀ (4×4), entries in {0, ±1}.
BT = np.array([[1, 0, -1, 0],
               [0, 1, 1, 0],
               [0, -1, 1, 0],
               [0, 1, 0, -1]], np.int64)
#: Weight transform 2·G (4×3), integer.
G2 = np.array([[2, 0, 0],
               [1, 1, 1],
               [1, -1, 1],
               [0, 0, 2]], np.int64)
#: Output transform Aᵀ (2×4), entries in {0, ±1}.
AT = np.array([[1, 1, 1, 0],
               [0, 1, -1, -1]], np.int64)


def weight_transform(weight):
    """U = G2 g G2ᵀ. weight: int (M, N, 3, 3) -> int64 (M, N, 4, 4), |U| ≤ 9·max|g|."""
    return np.einsum("ai,mnij,bj->mnab", G2, np.asarray(weight, np.int64), G2)


def input_transform(tiles):
    """V = Bᵀ d B for 4×4 tiles. tiles: int (..., 4, 4) -> int64 (..., 4, 4)."""
    return np.einsum("ai,...ij,bj->...ab", BT, np.asarray(tiles, np.int64), BT)


def output_transform(m):
    """4Y = Aᵀ M A. m: int (..., 4, 4) -> int64 (..., 2, 2)."""
    return np.einsum("ai,...ij,bj->...ab", AT, np.asarray(m, np.int64), AT)


def conv2d_winograd_acc(x, weight, bias, padding, input_zero_point):
    """int32 accumulators of a 3×3 stride-1 quantized convolution by Winograd F(2×2, 3×3).

    Same contract as :func:`cnnforge.sim.golden.conv2d_acc` (padding and the ragged border
    filled with the input zero point, bias with the zero point folded in) and bit-exactly the
    same result.

    Parameters
    ----------
    x : ndarray, int8, shape (B, N, H, W)
    weight : ndarray, int8, shape (M, N, 3, 3)
    bias : ndarray, int32, shape (M,)
    padding : (int, int)
    input_zero_point : int

    Returns
    -------
    ndarray, int64, shape (B, M, OH, OW)

    Raises
    ------
    ValueError
        For a kernel that is not 3×3.
    """
    weight = np.asarray(weight)
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3 kernel, got {weight.shape[2:]}")
    b, n, h, w = x.shape
    ph, pw = padding
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = math.ceil(oh / 2), math.ceil(ow / 2)
    # pad to cover whole tiles: 2·t + 2 rows/cols, extra border with the zero point
    padded = np.full((b, n, 2 * th + 2, 2 * tw + 2), int(input_zero_point), np.int64)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    idx_y = (2 * np.arange(th))[:, None] + np.arange(4)[None, :]     # (th, 4)
    idx_x = (2 * np.arange(tw))[:, None] + np.arange(4)[None, :]
    tiles = padded[:, :, idx_y[:, None, :, None], idx_x[None, :, None, :]]   # b n th tw 4 4
    v = input_transform(tiles)
    u = weight_transform(weight)
    m = np.einsum("mnab,kntsab->kmtsab", u, v, optimize=True)
    y4 = output_transform(m)                                           # b m th tw 2 2
    if np.any(y4 & 3):
        raise AssertionError("Winograd output not divisible by 4: the transforms are wrong")
    y = (y4 >> 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, -1, 2 * th, 2 * tw)[:, :, :oh, :ow]
    return y + np.asarray(bias, np.int64)[None, :, None, None]


def widths(n_channels):
    """Signed bit widths of the Winograd intermediates for a reduction over ``n_channels``:
    ``{"V", "U", "product", "M", "Y4"}`` (see the module table)."""
    v_max, u_max = 512, 9 * 127
    product = v_max * u_max
    m_max = n_channels * product
    y4_max = 9 * m_max
    return {name: int(bound).bit_length() + 1 for name, bound in
            (("V", v_max), ("U", u_max), ("product", product), ("M", m_max), ("Y4", y4_max))}
