"""The whole accelerator (``cnnforge.hw.rtl.accelerator``) in Amaranth's simulator against the golden
model: every layer's output map and the logits, bit for bit.

Networks are small and random (hypothesis) or hand-made for one feature: tiling with ragged last
tiles and double buffering, non-square arrays, stride 2, padding, fused ReLU/ReLU6 and max-pool,
saturation at both int8 ends, and stream gaps / back-pressure. The Amaranth simulator runs a few
thousand to tens of thousands of cycles per second, so every case is kept to a few thousand
cycles; the long runs (the digits network, many images) use Verilator in
``tests/sim/test_accelerator_rtl.py`` (the shared helpers are in ``tests/helpers.py``).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.network import ReLU, ReLU6
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.rtl import rtl_accelerator
from tests.helpers import (check_result, compile_tight, conv_net, random_images, random_network,
                           run_and_check, tile_counts)

ARRAYS = [(1, 1), (2, 3), (3, 2), (4, 4)]


# ------------------------------------------------------------------------------------------------
# Random networks


def check_random_network(net, array, buffer, dataflow, algorithm, lutram, seed):
    qnet = quantize(net)
    if buffer == "default":
        program = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow,
                                                          algorithm=algorithm,
                                                          lutram_buffers=lutram))
    else:
        program = compile_tight(qnet, *array, slack=1.0 if buffer == "tight" else 1.5,
                                dataflow=dataflow, algorithm=algorithm, lutram_buffers=lutram)
    run_and_check(program, random_images(qnet, 2, seed))


RANDOM_CASE = dict(net=random_network(), array=st.sampled_from(ARRAYS),
                   buffer=st.sampled_from(["default", "tight", "tight", "slack"]),
                   dataflow=st.sampled_from(["or", "or", "or", "ir", "wr", "auto"]),
                   algorithm=st.sampled_from(["direct", "direct", "auto", "winograd"]),
                   lutram=st.booleans(), seed=st.integers(0, 2**32 - 1))


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(**RANDOM_CASE)
def test_random_networks(net, array, buffer, dataflow, algorithm, lutram, seed):
    """Every layer and the logits of two images (one of them all int8 extremes) equal the golden
    model, with the planner's tiles for the default buffer or for the smallest buffer the
    compiler accepts (several tiles, double buffering), for every dataflow and algorithm, with
    the tile buffers read synchronously or behind a registered address (``lutram_buffers``)."""
    check_random_network(net, array, buffer, dataflow, algorithm, lutram, seed)


@pytest.mark.slow
@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(**RANDOM_CASE)
def test_random_networks_many(net, array, buffer, dataflow, algorithm, lutram, seed):
    """As :func:`test_random_networks`, many more cases."""
    check_random_network(net, array, buffer, dataflow, algorithm, lutram, seed)


# ------------------------------------------------------------------------------------------------
# Hand-picked networks


GEOMETRIES = {
    # conv stride 1 pad 1, ReLU, max-pool over an odd-sized map (last row and column dropped)
    "s1p1-relu-pool": dict(seed=2, input_shape=(3, 5, 7), m=5, k=3, stride=1, padding=1,
                           act=ReLU, pool=True),
    # stride 2 pad 1, ReLU6, odd sizes
    "s2p1-relu6": dict(seed=3, input_shape=(2, 7, 5), m=7, k=3, stride=2, padding=1, act=ReLU6),
    # kernel 2 stride 2, no padding, no activation
    "k2s2p0": dict(seed=4, input_shape=(5, 5, 6), m=3, k=2, stride=2, padding=0, act=None),
    # 1x1 conv (K = N), ReLU and pool
    "k1s1-pool": dict(seed=5, input_shape=(6, 3, 5), m=2, k=1, stride=1, padding=0, act=ReLU,
                      pool=True),
}
# every geometry on two array sizes, every array size twice
GEOMETRY_CASES = [("s1p1-relu-pool", (1, 1)), ("s1p1-relu-pool", (4, 4)),
                  ("s1p1-relu-pool-winograd", (2, 3)),
                  ("s2p1-relu6", (2, 3)), ("s2p1-relu6", (3, 2)),
                  ("k2s2p0", (4, 4)), ("k2s2p0", (1, 1)),
                  ("k1s1-pool", (3, 2)), ("k1s1-pool", (2, 3))]


@pytest.mark.parametrize("kind, array", GEOMETRY_CASES,
                         ids=[f"{k}-{r}x{c}" for k, (r, c) in GEOMETRY_CASES])
def test_arrays_and_geometries(kind, array):
    """Each array size (1x1, 2x3, 3x2, 4x4) on stride 1 and 2, padding 0 and 1, kernels 1-3,
    ReLU/ReLU6 and a fused max-pool, with the planner's tiles (direct convolution, and once
    Winograd F(2x2, 3x3) on the 3x3 stride-1 layer)."""
    algorithm = "winograd" if kind.endswith("-winograd") else "direct"
    qnet = quantize(conv_net(**GEOMETRIES[kind.removesuffix("-winograd")]))
    program = compile_network(qnet, AcceleratorConfig(*array, algorithm=algorithm))
    assert program.layers[0].algorithm == algorithm
    run_and_check(program, random_images(qnet, 2, array[0] * 10 + array[1]))


@pytest.mark.parametrize("rows, cols", [(2, 3)])
def test_small_buffer_forces_tiles(rows, cols):
    """With the smallest input tile buffer the compiler accepts, the conv layer is cut into
    several tiles in both directions and the two halves of the buffer alternate (ping-pong)."""
    net = conv_net(6, (3, 6, 7), m=5, k=3, stride=1, padding=1, act=ReLU, pool=True)
    qnet = quantize(net)
    program = compile_tight(qnet, rows, cols)
    ntr, ntc = tile_counts(program)[program.layers[0].name]
    assert ntr * ntc >= 3 and ntr > 1, tile_counts(program)
    default = compile_network(qnet, AcceleratorConfig(rows, cols, algorithm="direct"))
    assert program.config.input_buffer_bytes < default.config.input_buffer_bytes
    run_and_check(program, random_images(qnet, 2, 7))


# (Tr, Tc, dataflow) overrides of the conv layer (output 7×9): ragged last tiles in one or both
# directions, tiles narrower than the array, a single-row tile
OVERRIDES = [
    (dict(pool=False), (2, 3), [(3, 4, "or"), (1, 9, "or"), (7, 2, "or"), (3, 4, "ir")]),
    # pooled 7×9 -> 3×4: tiles of whole windows, the last ones ragged (and cut by the pool),
    # and tiles that split windows (the window's top-left pixel is still computed first)
    (dict(pool=True), (3, 2), [(4, 6, "or"), (2, 8, "or"), (3, 5, "or"), (3, 5, "wr")]),
]


@pytest.mark.parametrize("options, array, overrides", OVERRIDES, ids=["no-pool", "pool"])
def test_tile_overrides(options, array, overrides):
    """``tiles={name: (Tr, Tc)}`` is honoured (the descriptor holds it) and every tiling gives
    the same, golden, result."""
    net = conv_net(8, (2, 7, 9), m=3, k=3, stride=1, padding=1, act=ReLU, hidden=4, out=3,
                   **options)
    qnet = quantize(net)
    images = random_images(qnet, 2, 9)
    name = compile_network(qnet, AcceleratorConfig(*array)).layers[0].name
    for tr, tc, dataflow in overrides:
        program = compile_network(qnet, AcceleratorConfig(*array, input_buffer_bytes=1 << 16,
                                                          algorithm="direct"),
                                  tiles={name: (tr, tc)}, dataflows={name: dataflow})
        v = program.layers[0].values
        assert (v["Tr"], v["Tc"]) == (tr, tc)
        assert (v["ntr"], v["ntc"]) == (-(-7 // tr), -(-9 // tc))
        assert program.layers[0].dataflow == dataflow
        run_and_check(program, images)


def test_saturation_both_ends():
    """Accumulators far outside the output range (weights ±127, M0 ≈ 2^31, no shift: the output
    step is one accumulator unit) saturate at −128 and 127 in the conv and the logits, through
    tiles and a fused max-pool."""
    net = conv_net(10, (2, 5, 7), m=3, k=3, stride=1, padding=1, act=None, pool=True, hidden=5,
                   out=6)
    qnet = quantize(net)
    rng = np.random.default_rng(10)
    for op in qnet.ops:
        if op.kind in ("conv", "linear"):
            op.weight = rng.choice(np.array([-127, 127], np.int8), op.weight.shape)
            op.multiplier = np.full_like(op.multiplier, (1 << 31) - 1)
            op.shift = np.zeros_like(op.shift)
            op.bias = rng.integers(-1000, 1000, op.bias.shape).astype(np.int32)
    images = rng.choice(np.array([-128, 127, 0, 5], np.int8), (2, *net.input_shape))
    program = compile_tight(qnet, 3, 2)
    golden = run_and_check(program, images)
    conv = golden[0]
    assert conv.min() == -128 and conv.max() == 127
    assert golden[-1].min() == -128 and golden[-1].max() == 127


def test_saturation_tiny_output_range():
    """Calibrated on inputs far narrower than the ones it runs on, every activation range is too
    small: outputs clamp at both int8 ends all through the network."""
    net = conv_net(11, (1, 6, 6), m=4, k=3, stride=1, padding=0, act=None, hidden=5, out=5)
    net.calibration = net.calibration * 0.01
    qnet = quantize(net)
    rng = np.random.default_rng(11)
    images = rng.choice(np.array([-128, 127], np.int8), (2, *net.input_shape))
    golden = run_and_check(compile_network(qnet, AcceleratorConfig(2, 3, algorithm="direct")),
                           images)
    assert golden[0].min() == -128 and golden[0].max() == 127


# ------------------------------------------------------------------------------------------------
# Streams


def test_stream_handshake():
    """Input pauses (40 % of cycles) and output back-pressure (60 %) on three images: no beat is
    lost or duplicated (logits and every debug map equal the golden model, the debug stream of
    each image has exactly its expected length), and the engine's counters are the same as
    without stalls (the streams only ever wait outside the layers)."""
    net = conv_net(12, (2, 5, 6), m=3, k=3, stride=1, padding=1, act=ReLU, pool=True, hidden=5,
                   out=7)
    qnet = quantize(net)
    program = compile_tight(qnet, 2, 3)
    images = random_images(qnet, 3, 12)
    logits, layers, cycles = rtl_accelerator(program, images, gaps=0.4, backpressure=0.6,
                                             seed=3)
    check_result(program, images, logits, layers, cycles)
    clean_logits, clean_layers, clean_cycles = rtl_accelerator(program, images)
    assert np.array_equal(clean_logits, logits)
    for stalled, clean in zip(layers, clean_layers):
        assert [c for c, _ in stalled] == [c for c, _ in clean]
    assert np.array_equal(cycles, clean_cycles)
    # logits only (no debug stream): same logits and cycles
    nodebug_logits, nodebug_layers, nodebug_cycles = rtl_accelerator(
        program, images, debug=False, gaps=0.3, backpressure=0.3, seed=4)
    assert nodebug_layers == []
    assert np.array_equal(nodebug_logits, logits)
    assert np.array_equal(nodebug_cycles, cycles)
