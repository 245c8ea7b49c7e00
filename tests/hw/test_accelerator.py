"""The whole accelerator (``cnnforge.hw.rtl.accelerator``) in Amaranth's simulator against the golden
model: every layer's output map and the logits, bit for bit.

Networks are small and random (hypothesis) or hand-made for one feature: tiling with ragged last
tiles and double buffering, non-square arrays, stride 2, padding, fused ReLU/ReLU6 and max-pool,
saturation at both int8 ends, and stream gaps / back-pressure. The Amaranth simulator runs a few
thousand to tens of thousands of cycles per second, so every case is kept to a few thousand
cycles; the long runs (the digits network, many images) use Verilator in
``tests/sim/test_accelerator_rtl.py``, which reuses the helpers of this module.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import AcceleratorConfig, ConfigError, compile_network
from cnnforge.hw.frontend.network import Conv2d, Flatten, Linear, MaxPool2d, ReLU, ReLU6, Sequential
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.sim.golden import run_quantized
from cnnforge.sim.rtl import rtl_accelerator

# ------------------------------------------------------------------------------------------------
# Helpers (also used by tests/sim/test_accelerator_rtl.py)


def make_network(input_shape, layers, seed, calib=16):
    """A Sequential with random float weights (fan-in scaled) and random calibration inputs
    (an asymmetric range, so the input zero point is not 0 and padding is not plain 0)."""
    net = Sequential(*layers, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in net.state_dict_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
        scale = 1 / math.sqrt(fan_in) if key.endswith("weight") else 0.1
        state[key] = (rng.standard_normal(shape) * scale).astype(np.float32)
    net.load_state_dict(state)
    net.calibration = (rng.standard_normal((calib, *input_shape)) * 2 + 0.4).astype(np.float32)
    return net


def random_images(qnet, count, seed):
    """int8 images: the quantized calibration distribution, and one with the int8 extremes."""
    rng = np.random.default_rng(seed)
    shape = qnet.network.input_shape
    x = (rng.standard_normal((count, *shape)) * 2 + 0.4).astype(np.float32)
    images = qnet.quantize_input(x)
    if count > 1:
        images[-1] = rng.choice(np.array([-128, 127], np.int8), shape)
    return images


def compile_tight(qnet, rows, cols, slack=1.0, dataflow="or", algorithm="direct",
                  lutram_buffers=False, **kwargs):
    """Compile with the smallest input tile buffer the compiler accepts (times ``slack``), found
    from its own error message ("... needs N bytes of input tile buffer ..."), so the planner
    has to cut layers into several tiles."""
    budget = cols
    for _ in range(20):
        try:
            compile_network(qnet, AcceleratorConfig(rows, cols, input_buffer_bytes=budget,
                                                    dataflow=dataflow, algorithm=algorithm,
                                                    lutram_buffers=lutram_buffers),
                            **kwargs)
            break
        except ConfigError as exc:
            need = re.search(r"needs (\d+) bytes", str(exc))
            assert need and int(need.group(1)) > budget, str(exc)
            budget = int(need.group(1))
    budget = max(cols, int(budget * slack))
    return compile_network(qnet, AcceleratorConfig(rows, cols, input_buffer_bytes=budget,
                                                   dataflow=dataflow, algorithm=algorithm,
                                                   lutram_buffers=lutram_buffers),
                           **kwargs)


def layer_cycles(entry):
    """Cycle count of one layer's debug record (an int, or the counters dict)."""
    return entry["cycles"] if isinstance(entry, dict) else int(entry)


def golden_layers(program, images):
    """Golden output of every program layer: (B, *shape) int8 each, and the golden result."""
    qnet = program.qnet
    golden = run_quantized(qnet, np.asarray(images, np.int8))
    return [golden[qnet.ops.index(layer.ops[-1])] for layer in program.layers], golden


def check_result(program, images, logits, layers, cycles):
    """Logits, every layer's map and the cycle counters of an RTL run against the golden model.

    ``layers`` is the per-image list of ``(counters, ofm)`` per layer of ``rtl_accelerator`` (or
    ``RTLResult.layers``). Returns the golden result."""
    images = np.asarray(images, np.int8)
    expected, golden = golden_layers(program, images)
    assert len(layers) == len(images)
    for b, per_image in enumerate(layers):
        assert len(per_image) == len(program.layers)
        for layer, (counters, ofm), exp in zip(program.layers, per_image, expected):
            assert ofm.shape == exp.shape[1:], (layer.name, ofm.shape, exp.shape)
            if not np.array_equal(ofm, exp[b]):
                bad = np.argwhere(ofm != exp[b])
                first = tuple(int(i) for i in bad[0])
                raise AssertionError(
                    f"image {b}, layer {layer.name} ({layer.type}): {len(bad)} of {ofm.size} "
                    f"values differ, first at {first}: RTL {ofm[first]}, golden {exp[b][first]}"
                    f" (tiles {layer.values['Tr']}x{layer.values['Tc']}, "
                    f"{layer.values['ntr']}x{layer.values['ntc']})")
            if layer.values.get("df", Dataflow.OR) == Dataflow.OR:
                # OR issues one beat per cycle: a layer takes at least passes·L cycles
                assert layer_cycles(counters) >= layer.passes * layer.values["L"], (
                    layer.name, counters)
        # the engine's image counter covers every layer (and the sequencing between them)
        assert cycles[b] >= sum(layer_cycles(c) for c, _ in per_image), (b, cycles[b])
    assert np.array_equal(logits, golden[-1].reshape(len(images), -1))
    return golden


def run_and_check(program, images, **kwargs):
    logits, layers, cycles = rtl_accelerator(program, images, **kwargs)
    return check_result(program, images, logits, layers, cycles)


@st.composite
def random_network(draw, max_linear=2):
    """Conv2d (kernel 1/2/3, stride 1/2, padding 0/1) [+ReLU/ReLU6] [+MaxPool2d(2)], Flatten,
    1-2 Linear; sizes 3..9, channel counts 1..7."""
    n = draw(st.integers(1, 7))
    m = draw(st.integers(1, 7))
    k = draw(st.sampled_from([1, 2, 3]))
    s = draw(st.sampled_from([1, 2]))
    p = draw(st.sampled_from([0, 1]))
    h = draw(st.integers(max(3, k - 2 * p), 9))
    w = draw(st.integers(max(3, k - 2 * p), 9))
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    layers = [Conv2d(n, m, k, stride=s, padding=p)]
    act = draw(st.sampled_from(["relu", "relu6", "none"]))
    layers += {"relu": [ReLU()], "relu6": [ReLU6()], "none": []}[act]
    pool = min(oh, ow) >= 2 and draw(st.booleans())
    if pool:
        layers.append(MaxPool2d(2))
        oh, ow = oh // 2, ow // 2
    layers.append(Flatten())
    features = m * oh * ow
    for i in range(draw(st.integers(1, max_linear))):
        out = draw(st.integers(1, 12))
        layers.append(Linear(features, out))
        features = out
        if i + 1 < max_linear and draw(st.booleans()):
            layers.append(ReLU())
    if isinstance(layers[-1], ReLU):
        layers.pop()
    return make_network((n, h, w), layers, draw(st.integers(0, 2**32 - 1)))


ARRAYS = [(1, 1), (2, 3), (3, 2), (4, 4)]


def tile_counts(program):
    return {layer.name: (layer.values["ntr"], layer.values["ntc"]) for layer in program.layers}


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
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(**RANDOM_CASE)
def test_random_networks_many(net, array, buffer, dataflow, algorithm, lutram, seed):
    """As :func:`test_random_networks`, many more cases."""
    check_random_network(net, array, buffer, dataflow, algorithm, lutram, seed)


# ------------------------------------------------------------------------------------------------
# Hand-picked networks


def conv_net(seed=1, input_shape=(3, 7, 9), m=5, k=3, stride=1, padding=1, act=ReLU, pool=False,
             hidden=6, out=4):
    """Conv2d [+act] [+MaxPool2d(2)] + Flatten + Linear + ReLU + Linear."""
    n, h, w = input_shape
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    layers = [Conv2d(n, m, k, stride=stride, padding=padding)]
    if act is not None:
        layers.append(act())
    if pool:
        layers.append(MaxPool2d(2))
        oh, ow = oh // 2, ow // 2
    layers += [Flatten(), Linear(m * oh * ow, hidden), ReLU(), Linear(hidden, out)]
    return make_network(input_shape, layers, seed)


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
