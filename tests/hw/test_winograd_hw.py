"""Winograd F(2×2, 3×3) layers of the whole accelerator in Amaranth's simulator
(:func:`cnnforge.sim.rtl.rtl_accelerator`): every layer's output map equals the golden model,
the logits too, and the RTL's per-layer counters (cycles and buffer accesses) equal the
analytic model (:func:`cnnforge.hw.models.perf.layer_model`) exactly, as do the cycles per image.

Cases cover the arrays 1×1, 2×2, 3×2, 2×5 and 4×4 (rows ≠ cols both ways), odd and even map
sizes (ragged 2×2 output tiles, down to a single output pixel), padding 0 and 1, channel
counts that are not multiples of R or C (N = 1 included, and N > R + C + 1 so a pass is N
beats long), ReLU / ReLU6 / no activation, a fused MaxPool2d(2), several input tiles (the
smallest input buffer the compiler accepts, and ``tiles=`` overrides counted in 2×2 output
tiles), and Winograd layers next to direct layers of all three dataflows (OR, IR, WR) in one
network. Random networks come from hypothesis. Requests for Winograd where it does not apply
(5×5, stride 2, Linear) are refused with the layer and the reason.

The Amaranth simulator runs a few thousand cycles per second, so every case is a few thousand
cycles; the bundled digits network runs on Verilator in ``tests/sim/test_winograd_rtl.py``.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.network import (
    Conv2d, Flatten, Linear, MaxPool2d, NetworkError, ReLU, ReLU6, Sequential,
)
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import layer_cycles, layer_model, network_model
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.rtl import rtl_accelerator
from tests.helpers import (compile_tight, cycle_limit, golden_layers, make_network,
                           random_images)

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "net.py"


def layer_names(qnet, config=None):
    """Engine layer names (``"0+1+2"``: the ops each layer covers) in order."""
    return [layer.name for layer in
            compile_network(qnet, config or AcceleratorConfig(algorithm="direct")).layers]


def check_winograd(program, images):
    """Run ``images`` through the RTL: every layer's map == golden, every layer's counters ==
    ``layer_model(layer.values, config).counters()``, cycles per image == ``network_model``,
    logits == golden. Returns the per-image ``[(counters, ofm), ...]``."""
    images = np.asarray(images, np.int8)
    logits, layers, cycles = rtl_accelerator(program, images,
                                             max_cycles=cycle_limit(program, images))
    expected, golden = golden_layers(program, images)
    cfg = program.config
    _, total = network_model(program)
    assert len(layers) == len(images)
    for b, per_image in enumerate(layers):
        for layer, (counters, ofm), exp in zip(program.layers, per_image, expected):
            v = layer.values
            where = (f"image {b}, layer {layer.name} ({layer.type}, {layer.algorithm} "
                     f"{layer.dataflow.upper()} on {cfg.rows}x{cfg.cols}, tiles "
                     f"{v['Tr']}x{v['Tc']} -> {v['ntr']}x{v['ntc']})")
            assert ofm.shape == exp.shape[1:], where
            if not np.array_equal(ofm, exp[b]):
                bad = np.argwhere(ofm != exp[b])
                first = tuple(int(i) for i in bad[0])
                raise AssertionError(f"{where}: {len(bad)} of {ofm.size} values differ, first "
                                     f"at {first}: RTL {ofm[first]}, golden {exp[b][first]}")
            predicted = layer_model(v, cfg).counters()
            if counters != predicted:
                diff = {k: (counters[k], predicted[k]) for k in counters
                        if counters[k] != predicted[k]}
                raise AssertionError(f"{where}: RTL counters differ from the model "
                                     f"(name: (RTL, model)): {diff}")
        assert int(cycles[b]) == total, (b, int(cycles[b]), total)
    assert np.array_equal(logits, golden[-1].reshape(len(images), -1))
    return layers


def winograd_everywhere(qnet):
    """``algorithms=`` putting every 3×3 stride-1 convolution on Winograd."""
    out = {}
    for name, op in zip(layer_names(qnet), _gemm_ops(qnet)):
        if op.kind == "conv" and op.kernel_size == (3, 3) and op.stride == (1, 1):
            out[name] = "winograd"
    return out


def _gemm_ops(qnet):
    return [op for op in qnet.ops if op.kind in ("conv", "linear")]


# ------------------------------------------------------------------------------------------------
# Hand-picked layer shapes, one array each


def net_odd_pool():
    """5×7 map (odd: ragged tiles in both directions), padding 1, 3 -> 5 channels, ReLU, fused
    MaxPool2d(2) (last output row and column dropped), then Linear."""
    return make_network((3, 5, 7), [Conv2d(3, 5, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
                                    Linear(30, 4)], 41)


def net_even_relu6():
    """6×8 map, padding 0 (4×6 output: 2×3 whole tiles), 3 -> 3 channels, ReLU6."""
    return make_network((3, 6, 8), [Conv2d(3, 3, 3), ReLU6()], 42)


def net_odd_pad0():
    """7×5 map, padding 0 (5×3 output, ragged), 5 -> 7 channels, no activation."""
    return make_network((5, 7, 5), [Conv2d(5, 7, 3)], 43)


def net_one_channel():
    """N = 1 (a pass is R + C + 1 beats for one useful one), 4×5 map, padding 1, ReLU."""
    return make_network((1, 4, 5), [Conv2d(1, 3, 3, padding=1), ReLU()], 44)


def net_1x1_map():
    """A 1×1 map with padding 1: one output pixel, three of its tile's four discarded."""
    return make_network((2, 1, 1), [Conv2d(2, 3, 3, padding=1), ReLU(), Flatten(),
                                    Linear(3, 2)], 45)


def net_3x3_map():
    """The smallest map without padding, 3×3 (one output pixel), 4 -> 5 channels, ReLU6."""
    return make_network((4, 3, 3), [Conv2d(4, 5, 3), ReLU6(), Flatten(), Linear(5, 3)], 46)


def net_many_channels():
    """N = 9 > R + C + 1 on 2×2 (passes of N beats), 4×4 map, padding 1, ReLU, pool."""
    return make_network((9, 4, 4), [Conv2d(9, 3, 3, padding=1), ReLU(), MaxPool2d(2)], 47)


def net_2x2_map():
    """An even 2×2 map with padding 1 (one whole tile), 3 -> 6 channels."""
    return make_network((3, 2, 2), [Conv2d(3, 6, 3, padding=1), ReLU()], 48)


SHAPES = [
    ("odd-pool", net_odd_pool, (3, 2)),
    ("even-relu6", net_even_relu6, (2, 5)),
    ("odd-pad0", net_odd_pad0, (4, 4)),
    ("one-channel", net_one_channel, (1, 1)),
    ("1x1-map", net_1x1_map, (2, 2)),
    ("3x3-map", net_3x3_map, (3, 2)),
    ("many-channels", net_many_channels, (2, 2)),
    ("2x2-map", net_2x2_map, (2, 5)),
]


@pytest.mark.parametrize("make, array", [(make, array) for _, make, array in SHAPES],
                         ids=[f"{name}-{r}x{c}" for name, _, (r, c) in SHAPES])
def test_winograd_shapes(make, array):
    """The planner's tiles for the default buffer, the 3×3 layer on Winograd: every map ==
    golden, counters == model (two images, one of them all int8 extremes)."""
    qnet = quantize(make())
    algorithms = winograd_everywhere(qnet)
    program = compile_network(qnet, AcceleratorConfig(*array), algorithms=algorithms)
    wino = [layer for layer in program.layers if layer.algorithm == "winograd"]
    assert [layer.name for layer in wino] == list(algorithms)
    for layer in wino:
        assert layer.values["df"] is Dataflow.WINOGRAD and layer.dataflow == "or"
        assert layer.tiling["Tr"] == 2 * layer.values["Tr"]
        assert layer.multiplications == (layer.values["M"] * layer.values["N"] * 16
                                         * layer.values["OH"] * layer.values["OW"])
    check_winograd(program, random_images(qnet, 2, sum(array)))


# ------------------------------------------------------------------------------------------------
# Several tiles


def test_smallest_buffer_many_tiles():
    """The smallest input tile buffer the compiler accepts for a Winograd layer: several tiles
    (ping-pong halves alternating), ragged edges, pool, then a Linear."""
    qnet = quantize(make_network((3, 6, 7), [Conv2d(3, 5, 3, padding=1), ReLU(), MaxPool2d(2),
                                             Flatten(), Linear(45, 4)], 49))
    program = compile_tight(qnet, 3, 2, algorithm="winograd")
    v = program.layers[0].values
    assert program.layers[0].algorithm == "winograd"
    assert v["ntr"] * v["ntc"] > 1, (v["ntr"], v["ntc"])
    check_winograd(program, random_images(qnet, 1, 49))


def ragged_net():
    """3x3 pad 1 on 2 x 7 x 9: output 7×9 = 4×5 Winograd tiles (the last row and column of
    tiles half used)."""
    return make_network((2, 7, 9), [Conv2d(2, 3, 3, padding=1), ReLU()], 50)


# (array, (Tr, Tc) in 2×2 output tiles): ragged last tiles in both directions, one tile row,
# one tile column (columns of the array idle)
OVERRIDES = [((2, 2), (3, 2)), ((2, 5), (1, 5)), ((4, 4), (4, 1))]


@pytest.mark.parametrize("array, tile", OVERRIDES,
                         ids=[f"{r}x{c}-{t[0]}x{t[1]}" for (r, c), t in OVERRIDES])
def test_tile_overrides(array, tile):
    """``tiles={name: (Tr, Tc)}`` on a Winograd layer counts 2×2 output tiles: the descriptor
    holds them, ``LayerPlan.tiling`` reports output pixels, and the result is golden."""
    qnet = quantize(ragged_net())
    name = layer_names(qnet)[0]
    program = compile_network(qnet, AcceleratorConfig(*array, input_buffer_bytes=1 << 14),
                              tiles={name: tile}, algorithms={name: "winograd"})
    layer = program.layers[0]
    v = layer.values
    assert layer.algorithm == "winograd"
    assert (v["Tr"], v["Tc"]) == tile
    assert (v["ntr"], v["ntc"]) == (-(-4 // tile[0]), -(-5 // tile[1]))
    assert v["ntr"] * v["ntc"] > 1
    assert (layer.tiling["Tr"], layer.tiling["Tc"]) == (2 * tile[0], 2 * tile[1])
    check_winograd(program, random_images(qnet, 1, 50))


def test_v_buffer_wait_then_transform_bound():
    """Three one-tile groups on 1×1 with short compute (N = 2, M = 1): the third group's
    transform waits for a free V half, then the compute waits for that transform, so the cycle
    the V half frees up decides the layer's length (hypothesis found the model one cycle late
    here: RTL 255, model 256)."""
    qnet = quantize(make_network((2, 6, 1), [Conv2d(2, 1, 3, padding=1), ReLU(), Flatten(),
                                             Linear(6, 2)], 57))
    name = layer_names(qnet)[0]
    program = compile_network(qnet, AcceleratorConfig(1, 1), tiles={name: (1, 1)},
                              algorithms={name: "winograd"})
    v = program.layers[0].values
    assert (v["ntr"], v["ntc"], v["MB"], v["L"]) == (3, 1, 1, 3)
    check_winograd(program, random_images(qnet, 1, 57))


# ------------------------------------------------------------------------------------------------
# Winograd next to direct layers of every dataflow


@pytest.mark.parametrize("lutram", [False, True], ids=["bram", "lutram"])
def test_mixed_with_ir_and_wr(lutram):
    """Winograd (3×3 pad 1) -> direct IR (1×1) -> Winograd (3×3 pad 1, ReLU6, pool) -> direct
    WR (Linear): the input buffer switches between x-banked and channel-banked layouts, the
    partial-sum buffer and the V buffer between layers; with the tile buffers in block RAM (one
    cycle's read) and in distributed RAM (``lutram_buffers``: two, the controller's read-aligned
    outputs delayed with them), there with two product registers in the PEs and the weight ROM
    in banks of 2 words (three cycles a read, the tile buffer's as long): the ECP5 designs."""
    net = make_network((2, 5, 6), [Conv2d(2, 4, 3, padding=1), ReLU(), Conv2d(4, 3, 1),
                                   Conv2d(3, 5, 3, padding=1), ReLU6(), MaxPool2d(2), Flatten(),
                                   Linear(30, 5)], 51)
    qnet = quantize(net)
    names = layer_names(qnet)
    algorithms = dict(zip(names, ["winograd", "direct", "winograd", "direct"]))
    dataflows = {names[1]: "ir", names[3]: "wr"}
    program = compile_network(qnet, AcceleratorConfig(3, 2, lutram_buffers=lutram,
                                                      product_registers=1 + lutram,
                                                      weight_bank_words=2 * lutram),
                              algorithms=algorithms, dataflows=dataflows)
    assert [(layer.algorithm, layer.dataflow) for layer in program.layers] == [
        ("winograd", "or"), ("direct", "ir"), ("winograd", "or"), ("direct", "wr")]
    check_winograd(program, random_images(qnet, 2, 51))


def test_mixed_with_direct_or():
    """A direct 3×3 OR layer between two Winograd layers on a non-square array (2×5), odd map,
    then a Linear on WR."""
    net = make_network((3, 5, 5), [Conv2d(3, 4, 3, padding=1), ReLU(),
                                   Conv2d(4, 3, 3, padding=1), ReLU(),
                                   Conv2d(3, 2, 3), Flatten(), Linear(18, 3)], 52)
    qnet = quantize(net)
    names = layer_names(qnet)
    algorithms = dict(zip(names, ["winograd", "direct", "winograd", "direct"]))
    program = compile_network(qnet, AcceleratorConfig(2, 5), algorithms=algorithms,
                              dataflows={names[1]: "or", names[3]: "wr"})
    assert [layer.algorithm for layer in program.layers] == list(algorithms.values())
    check_winograd(program, random_images(qnet, 1, 52))


# ------------------------------------------------------------------------------------------------
# AcceleratorConfig(algorithm=...) and refusals


def mixed_kernels_net():
    """3×3 s1 (Winograd applies), 3×3 s2, 1×1, 5×5 and a Linear (it does not)."""
    return make_network((2, 6, 6), [Conv2d(2, 3, 3, padding=1), ReLU(),
                                    Conv2d(3, 4, 3, stride=2, padding=1), ReLU(),
                                    Conv2d(4, 3, 1), Conv2d(3, 3, 5, padding=2),
                                    Flatten(), Linear(27, 4)], 53)


def test_config_winograd_applies_only_where_it_can():
    """``AcceleratorConfig(algorithm="winograd")`` puts the 3×3 stride-1 layer on Winograd and
    leaves the stride-2, 1×1, 5×5 and Linear layers direct (no error); the result is golden."""
    qnet = quantize(mixed_kernels_net())
    program = compile_network(qnet, AcceleratorConfig(2, 2, algorithm="winograd"))
    assert [layer.algorithm for layer in program.layers] == [
        "winograd", "direct", "direct", "direct", "direct"]
    check_winograd(program, random_images(qnet, 1, 53))


def test_config_direct_overrides_layer_choice():
    """``algorithm="direct"`` in the config wins over ``Conv2d(..., algorithm="winograd")``;
    ``"auto"`` honours the layer's own choice."""
    net = make_network((2, 4, 4), [Conv2d(2, 3, 3, padding=1, algorithm="winograd"), ReLU()], 54)
    qnet = quantize(net)
    assert compile_network(qnet, AcceleratorConfig(2, 2, algorithm="direct")).layers[0] \
        .algorithm == "direct"
    assert compile_network(qnet, AcceleratorConfig(2, 2)).layers[0].algorithm == "winograd"


def test_auto_picks_the_faster():
    """``auto`` (the digits network's Conv2d default) takes Winograd exactly where the model
    finds it faster than every direct dataflow: the second conv on 2×2, neither conv on 4×4
    (one input channel, or a 2-tile-wide map, leaves most of each pass idle)."""
    qnet = quantize(load_network(DIGITS))
    for array in [(2, 2), (4, 4)]:
        cfg = AcceleratorConfig(*array, dataflow="auto")
        auto = compile_network(qnet, cfg)
        names = [layer.name for layer in auto.layers]
        for layer, name in zip(auto.layers, names):
            direct = compile_network(qnet, cfg, algorithms={name: "direct"}).layers[
                names.index(name)]
            if layer.gemm.kind == "linear":
                assert layer.algorithm == "direct"
                continue
            wino = compile_network(qnet, cfg, algorithms={name: "winograd"}).layers[
                names.index(name)]
            faster = layer_cycles(wino.values, cfg) < layer_cycles(direct.values, cfg)
            assert layer.algorithm == ("winograd" if faster else "direct"), (array, name)
        expected = ["direct", "winograd", "direct"] if array == (2, 2) else ["direct"] * 3
        assert [layer.algorithm for layer in auto.layers] == expected, array


@pytest.mark.parametrize("layer, reason", [
    (Conv2d(3, 4, 5, padding=2), r"kernel \(5, 5\)"),
    (Conv2d(3, 4, 3, stride=2, padding=1), r"stride \(2, 2\)"),
    (Conv2d(3, 4, (3, 1), padding=(1, 0)), r"kernel \(3, 1\)"),
])
def test_compile_refuses_winograd(layer, reason):
    """``algorithms={name: "winograd"}`` where Winograd does not apply: NetworkError naming the
    engine layer, its type and why."""
    qnet = quantize(make_network((3, 6, 6), [layer, ReLU()], 55))
    name = layer_names(qnet)[0]
    with pytest.raises(NetworkError, match=rf"^layer {re.escape(name)} \(Conv2d\+ReLU\): "
                                           rf"Winograd F\(2x2, 3x3\) needs a 3x3 kernel with "
                                           rf"stride 1 and groups=1, got .*{reason}"):
        compile_network(qnet, AcceleratorConfig(2, 2), algorithms={name: "winograd"})


def test_compile_refuses_winograd_linear():
    """A Linear layer on Winograd: NetworkError naming the layer (index 2, Linear) and the
    3×3 kernel requirement."""
    qnet = quantize(make_network((2, 2, 2), [Flatten(), Linear(8, 3), Linear(3, 2)], 56))
    names = layer_names(qnet)
    with pytest.raises(NetworkError, match=r"^layer 1 \(Linear\): Winograd F\(2x2, 3x3\) needs "
                                           r"a 3x3 kernel"):
        compile_network(qnet, algorithms={names[0]: "winograd"})


@pytest.mark.parametrize("layer, reason", [
    (Conv2d(3, 4, 5, padding=2, algorithm="winograd"), r"kernel \(5, 5\) stride \(1, 1\)"),
    (Conv2d(3, 4, 3, stride=2, algorithm="winograd"), r"kernel \(3, 3\) stride \(2, 2\)"),
])
def test_conv2d_refuses_winograd(layer, reason):
    """``Conv2d(..., algorithm="winograd")`` that cannot be: the Sequential refuses it when the
    layer is added, naming the layer index and type once, and the reason."""
    with pytest.raises(NetworkError) as info:
        Sequential(ReLU(), Conv2d(3, 3, 1), layer, input_shape=(3, 8, 8))
    message = str(info.value)
    assert re.match(rf"^layer 2 \(Conv2d\): Winograd F\(2x2, 3x3\) needs a 3x3 kernel with "
                    rf"stride 1 and groups=1, got {reason} groups 1$", message), message
    assert message.count("layer 2") == 1 and message.count("Conv2d") == 1, message


# ------------------------------------------------------------------------------------------------
# Random networks


ARRAYS = [(1, 1), (2, 2), (3, 2), (2, 5), (4, 4)]


@st.composite
def winograd_network(draw):
    """Conv2d 3×3 stride 1 (padding 0/1, 1-5 -> 1-5 channels, maps from the smallest to 7×7)
    [+ReLU/ReLU6] [+MaxPool2d(2)], then optionally a direct 1×1 conv and/or a Linear."""
    n, m = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    p = draw(st.sampled_from([0, 1]))
    h, w = draw(st.integers(3 - 2 * p, 7)), draw(st.integers(3 - 2 * p, 7))
    oh, ow = h + 2 * p - 2, w + 2 * p - 2
    layers = [Conv2d(n, m, 3, padding=p)]
    layers += {"relu": [ReLU()], "relu6": [ReLU6()], "none": []}[
        draw(st.sampled_from(["relu", "relu6", "none"]))]
    if min(oh, ow) >= 2 and draw(st.booleans()):
        layers.append(MaxPool2d(2))
        oh, ow = oh // 2, ow // 2
    if draw(st.booleans()):
        layers.append(Conv2d(m, 2, 1))
        m = 2
    if draw(st.booleans()):
        layers += [Flatten(), Linear(m * oh * ow, draw(st.integers(1, 6)))]
    return make_network((n, h, w), layers, draw(st.integers(0, 2**32 - 1)))


RANDOM = dict(net=winograd_network(), array=st.sampled_from(ARRAYS), tight=st.booleans(),
              seed=st.integers(0, 2**32 - 1))


def check_random(net, array, tight, seed, max_cycles):
    qnet = quantize(net)
    name = layer_names(qnet)[0]
    if tight:
        program = compile_tight(qnet, *array, algorithms={name: "winograd"})
    else:
        program = compile_network(qnet, AcceleratorConfig(*array),
                                  algorithms={name: "winograd"})
    assert program.layers[0].algorithm == "winograd"
    assume(network_model(program)[1] <= max_cycles)      # keep the Python simulation short
    check_winograd(program, random_images(qnet, 1, seed))


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(**RANDOM)
def test_random_winograd_networks(net, array, tight, seed):
    """Random Winograd layers (shapes, activation, pool, a following direct 1×1 conv or
    Linear) on every array, with the default or the smallest buffer."""
    check_random(net, array, tight, seed, max_cycles=4000)


@pytest.mark.slow
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(**RANDOM)
def test_random_winograd_networks_many(net, array, tight, seed):
    """As :func:`test_random_winograd_networks`, many more and longer cases."""
    check_random(net, array, tight, seed, max_cycles=15000)
