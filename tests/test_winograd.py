"""Golden Winograd F(2×2, 3×3) (``cnnforge.sim.winograd``) against independent references.

* :func:`conv2d_winograd_acc` equals the golden direct convolution
  (:func:`cnnforge.sim.golden.conv2d_acc`) bit for bit on random int8 tensors (hypothesis) and
  on the extremes: −128/127 inputs, ±127 weights, the input zero point at both int8 ends, odd
  and even map sizes down to one output pixel, padding 0 and 1, 1 to 36 input channels.
* The three transforms equal a float computation with the matrices of Lavin & Gray, "Fast
  Algorithms for Convolutional Neural Networks", CVPR 2016 (§4.1, G with its halves), written
  out here independently of the module.
* The bit widths of :func:`widths` hold on the worst case, found exactly: every quantity the
  hardware stores (V, U, U·V, the channel sums M and each running sum of the output transform)
  is bilinear in the weights and the input tile, so its extreme is at a vertex of the int8
  boxes; the tests enumerate all 2^16 input tiles of {−128, 127} and take the best weights in
  closed form.
"""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cnnforge.sim.golden import conv2d_acc
from cnnforge.sim.winograd import (
    AT, BT, G2, conv2d_winograd_acc, input_transform, output_transform, weight_transform, widths,
)

# Lavin & Gray 2016, §4.1: F(2×2, 3×3) = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A (floats, G with halves)
PAPER_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
PAPER_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
PAPER_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def correlate_2x2(d, g):
    """2×2 output of a 3×3 cross-correlation over a 4×4 tile (float, loops)."""
    return np.array([[sum(d[y + i, x + j] * g[i, j] for i in range(3) for j in range(3))
                      for x in range(2)] for y in range(2)])


# ------------------------------------------------------------------------------------------------
# Transforms against the paper


def test_matrices_are_the_papers():
    """The module's integer matrices are the paper's, with G scaled by 2."""
    assert np.array_equal(BT, PAPER_BT)
    assert np.array_equal(AT, PAPER_AT)
    assert np.array_equal(G2, 2 * PAPER_G)


def test_paper_identity_in_float():
    """The reference matrices themselves are right: Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is the 2×2
    correlation (so the comparisons below test against a correct reference)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = rng.integers(-128, 128, (4, 4)).astype(np.float64)
        g = rng.integers(-127, 128, (3, 3)).astype(np.float64)
        y = PAPER_AT @ ((PAPER_G @ g @ PAPER_G.T) * (PAPER_BT @ d @ PAPER_BT.T)) @ PAPER_AT.T
        assert np.array_equal(y, correlate_2x2(d, g))


def test_weight_transform_is_4_G_g_Gt():
    """U = G2 g G2ᵀ = 4·G g Gᵀ exactly (halves and quarters are exact in float64), per
    (m, n) of a weight tensor."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (5, 3, 3, 3))
    w[0, 0] = 127
    w[0, 1] = -127
    u = weight_transform(w.astype(np.int8))
    assert u.shape == (5, 3, 4, 4) and u.dtype == np.int64
    for m, n in itertools.product(range(5), range(3)):
        assert np.array_equal(u[m, n], 4 * (PAPER_G @ w[m, n] @ PAPER_G.T))


def test_input_transform_is_Bt_d_B():
    """V = Bᵀ d B for any leading shape of 4×4 tiles."""
    rng = np.random.default_rng(2)
    d = rng.integers(-128, 128, (2, 3, 5, 4, 4)).astype(np.int8)
    v = input_transform(d)
    assert v.shape == d.shape and v.dtype == np.int64
    for idx in itertools.product(*(range(s) for s in d.shape[:-2])):
        assert np.array_equal(v[idx], PAPER_BT @ d[idx] @ PAPER_BT.T)


def test_output_transform_is_At_m_A():
    """4Y = Aᵀ M A for any leading shape (M wide: up to N·2^20)."""
    rng = np.random.default_rng(3)
    mm = rng.integers(-(1 << 26), 1 << 26, (3, 2, 4, 4))
    y = output_transform(mm)
    assert y.shape == (3, 2, 2, 2) and y.dtype == np.int64
    for idx in itertools.product(range(3), range(2)):
        assert np.array_equal(y[idx], PAPER_AT @ mm[idx] @ PAPER_AT.T)


def test_transforms_compose_to_4y():
    """output_transform(weight_transform(g) ⊙ input_transform(d)) = 4·(d ⋆ g) on one tile,
    at the extremes and at random."""
    rng = np.random.default_rng(4)
    tiles = [np.full((4, 4), -128), np.full((4, 4), 127),
             np.array([[127, -128] * 2, [-128, 127] * 2] * 2)]
    tiles += [rng.integers(-128, 128, (4, 4)) for _ in range(20)]
    kernels = [np.full((3, 3), 127), np.full((3, 3), -127), rng.choice([-127, 127], (3, 3))]
    kernels += [rng.integers(-127, 128, (3, 3)) for _ in range(5)]
    for d, g in itertools.product(tiles, kernels):
        y4 = output_transform(weight_transform(g[None, None]) * input_transform(d))[0, 0]
        assert np.array_equal(y4, 4 * correlate_2x2(d.astype(np.float64), g))


# ------------------------------------------------------------------------------------------------
# Winograd convolution == direct convolution


def _values(rng, mode, shape, lo, hi):
    """int8 values: uniform, only the two ends, or all at one end."""
    if mode == "uniform":
        return rng.integers(lo, hi + 1, shape)
    if mode == "ends":
        return rng.choice(np.array([lo, hi]), shape)
    return np.full(shape, lo if mode == "lo" else hi)


def check_equal(x, w, bias, padding, zp):
    x = np.asarray(x, np.int8)
    w = np.asarray(w, np.int8)
    got = conv2d_winograd_acc(x, w, bias, padding, zp)
    want = conv2d_acc(x, w, bias, (1, 1), padding, zp)
    assert got.shape == want.shape, (got.shape, want.shape)
    if not np.array_equal(got, want):
        bad = np.argwhere(got != want)
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(f"{len(bad)} of {got.size} accumulators differ, first at {first}: "
                             f"Winograd {got[first]}, direct {want[first]}")
    return got


MODES = ["uniform", "uniform", "ends", "lo", "hi"]


@st.composite
def conv_case(draw):
    """A batch of 1-2 int8 maps, 1-6 or 31-36 input channels, 1-6 outputs; maps from the
    smallest a 3×3 kernel fits (1×1 with padding 1, 3×3 without) to 10×10; padding 0 or 1
    per axis; the zero point anywhere in int8, its ends often."""
    n = draw(st.one_of(st.integers(1, 6), st.integers(31, 36)))
    m = draw(st.integers(1, 6))
    ph, pw = draw(st.sampled_from([0, 1])), draw(st.sampled_from([0, 1]))
    h = draw(st.integers(3 - 2 * ph, 10))
    w = draw(st.integers(3 - 2 * pw, 10))
    batch = draw(st.integers(1, 2))
    zp = draw(st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127)))
    x_mode, w_mode = draw(st.sampled_from(MODES)), draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    return (batch, n, h, w, m), (ph, pw), zp, x_mode, w_mode, seed


@SETTINGS
@given(conv_case())
@example(((1, 1, 1, 1, 1), (1, 1), -128, "hi", "hi", 0))     # 1×1 map: one output, 3 discarded
@example(((1, 33, 3, 3, 5), (0, 0), 127, "lo", "lo", 1))     # 3×3 without padding, N ≥ 33
@example(((2, 36, 2, 2, 5), (1, 1), 127, "lo", "hi", 2))     # even 2×2 map, zero point 127
@example(((1, 35, 7, 5, 6), (1, 0), -128, "ends", "ends", 3))   # odd, mixed padding
@example(((1, 2, 10, 9, 3), (0, 1), 0, "uniform", "ends", 4))
def test_winograd_equals_direct(case):
    """conv2d_winograd_acc == conv2d_acc bit for bit (bias included, any batch)."""
    (batch, n, h, w, m), padding, zp, x_mode, w_mode, seed = case
    rng = np.random.default_rng(seed)
    x = _values(rng, x_mode, (batch, n, h, w), -128, 127)
    wt = _values(rng, w_mode, (m, n, 3, 3), -127, 127)
    bias = rng.integers(-(1 << 20), 1 << 20, m)
    check_equal(x, wt, bias, padding, zp)


@pytest.mark.parametrize("padding", [(0, 0), (1, 1)])
def test_every_small_map_size(padding):
    """Every map size from the smallest to 8×8 (both parities on both axes, so tiles are
    ragged in neither, one or both directions) on the int8 extremes and at random."""
    rng = np.random.default_rng(5)
    lo = 3 - 2 * padding[0]
    for h, w in itertools.product(range(lo, 9), repeat=2):
        for x_mode, w_mode, zp in (("ends", "ends", int(rng.integers(-128, 128))),
                                   ("lo", "hi", 127), ("hi", "lo", -128)):
            x = _values(rng, x_mode, (1, 3, h, w), -128, 127)
            wt = _values(rng, w_mode, (2, 3, 3, 3), -127, 127)
            got = check_equal(x, wt, rng.integers(-100, 100, 2), padding, zp)
            assert got.shape == (1, 2, h + 2 * padding[0] - 2, w + 2 * padding[1] - 2)


def test_largest_accumulators():
    """The largest accumulators of a layer with 64 input channels: every input −128 (padding
    too: zero point −128) against +127 and −127 weights reaches ∓9·64·128·127 exactly."""
    x = np.full((1, 64, 4, 5), -128)
    w = np.stack([np.full((64, 3, 3), 127), np.full((64, 3, 3), -127)])
    got = check_equal(x, w, np.zeros(2, np.int64), (1, 1), -128)
    assert got[0, 0].min() == got[0, 0].max() == -9 * 64 * 128 * 127
    assert got[0, 1].min() == got[0, 1].max() == 9 * 64 * 128 * 127


@pytest.mark.parametrize("kernel", [(5, 5), (1, 1), (3, 1), (1, 3), (2, 2), (3, 5)])
def test_bad_kernel_size(kernel):
    """Only 3×3 kernels: anything else is a ValueError naming the 3×3 requirement."""
    x = np.zeros((1, 2, 6, 6), np.int8)
    w = np.zeros((1, 2, *kernel), np.int8)
    with pytest.raises(ValueError, match=r"3x3 kernel"):
        conv2d_winograd_acc(x, w, np.zeros(1, np.int64), (1, 1), 0)


# ------------------------------------------------------------------------------------------------
# Bit widths on the exact worst case


def _vertex_tiles():
    """All 2^16 input tiles with every value at an int8 end, and their transforms (·, 16)."""
    bits = (np.arange(1 << 16)[:, None] >> np.arange(16)[None, :]) & 1
    d = np.where(bits == 1, 127, -128).reshape(-1, 4, 4)
    return d, input_transform(d).reshape(-1, 16)


# U[ξ] = Σ_ij WG[ξ, ij] g[ij], ξ = (a, b): WG[(a, b), (i, j)] = G2[a, i]·G2[b, j]
WG = np.einsum("ai,bj->abij", G2, G2).reshape(16, 9)


def worst_case(coef, v):
    """max over int8 tiles d and weights g ∈ [−127, 127] of |Σ_ξ coef[ξ]·U[ξ]·V[ξ]| for one
    channel (bilinear: the weights' best choice is 127·sign, in closed form), with its
    maximizing tile and weights.

    Parameters
    ----------
    coef : ndarray, int, shape (16,)
    v : ndarray, int64, shape (T, 16): V of every vertex tile
    """
    t = (v * coef[None, :]) @ WG                      # (T, 9): coefficient of each weight
    score = 127 * np.abs(t).sum(axis=1)
    best = int(np.argmax(score))
    g = (127 * np.where(t[best] >= 0, 1, -1)).reshape(3, 3)
    return int(score[best]), best, g


def fits(value, bits):
    """Whether a signed ``bits``-bit register holds ``value``."""
    return -(1 << (bits - 1)) <= value <= (1 << (bits - 1)) - 1


def running_output_transform_coefs():
    """Coefficients of every value an output-transform accumulator holds: lane (i, j) after
    passes ξ = 0..k (the hardware adds AT[i][a]·AT[j][b]·M[ξ] pass by pass, ξ = 4a + b)."""
    coefs = []
    for i, j in itertools.product(range(2), repeat=2):
        full = np.array([AT[i][x // 4] * AT[j][x % 4] for x in range(16)])
        for k in range(16):
            coefs.append(np.where(np.arange(16) <= k, full, 0))
    return coefs


@pytest.fixture(scope="module")
def vertices():
    return _vertex_tiles()


def test_v_and_u_bounds(vertices):
    """V reaches [−512, 510] and U ±1143 (the module table), inside widths()' V and U."""
    d, v = vertices
    assert v.min() == -512 and v.max() == 510
    # U: every weight at ±127 (the extremes are at vertices), all 512 sign patterns
    signs = np.array(list(itertools.product([-127, 127], repeat=9)))
    u = signs @ WG.T
    assert np.abs(u).max() == 9 * 127 == 1143
    for n in (1, 8, 33, 1000):
        wide = widths(n)
        assert fits(int(v.min()), wide["V"]) and fits(int(v.max()), wide["V"])
        assert fits(1143, wide["U"]) and fits(-1143, wide["U"])


def test_product_and_channel_sum_bounds(vertices):
    """The largest |U·V| at every transform position ξ, maximized exactly, is within the
    product width; N channels at their worst (all alike) stay within the M width."""
    d, v = vertices
    worst = 0
    for xi in range(16):
        coef = np.zeros(16, np.int64)
        coef[xi] = 1
        value, best, g = worst_case(coef, v)
        # the maximizing tile and weights really produce it
        uv = weight_transform(g[None, None]).reshape(16) * input_transform(d[best]).reshape(16)
        assert abs(int(uv[xi])) == value
        worst = max(worst, value)
    assert worst == 1143 * 512                          # the table's bound is attained
    for n in (1, 2, 3, 8, 16, 33, 64, 1000):
        wide = widths(n)
        assert fits(worst, wide["product"]) and fits(-worst, wide["product"])
        assert fits(n * worst, wide["M"]) and fits(-n * worst, wide["M"]), (n, wide)


def test_output_transform_bounds(vertices):
    """Every value an output-transform accumulator holds (each running sum of 4Y over the 16
    passes) and the final 4Y, maximized exactly, times N channels, fit widths()' Y4; the final
    4Y is exactly 4·9·128·127 per channel, as the direct convolution bounds it."""
    d, v = vertices
    final = []
    running = 0
    for coef in running_output_transform_coefs():
        value, best, g = worst_case(coef, v)
        running = max(running, value)
        if np.count_nonzero(coef) == 9:
            final.append(value)
    assert max(final) == 4 * 9 * 128 * 127
    for n in (1, 2, 8, 16, 33, 64, 1000):
        wide = widths(n)
        assert fits(n * running, wide["Y4"]) and fits(-n * running, wide["Y4"]), (n, wide)
        # and the PE accumulators: the direct result shifted back fits the M width too
        assert fits(n * max(final) // 4, wide["M"])
