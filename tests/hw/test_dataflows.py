"""The three dataflows (OR, IR, WR) in Amaranth's simulator: every layer's output map equals the
golden model AND the RTL's per-layer counters (cycles and buffer accesses) equal the analytic
model (:func:`cnnforge.hw.models.perf.layer_model`) exactly, as do the engine's cycles per image
(:func:`cnnforge.hw.models.perf.network_model`).

Cases cross each dataflow with array sizes (1x1, non-square, square) and layer shapes: 1x1 and
3x3 convolutions, stride 2, padding 0 and 1, odd map sizes, channel counts that are not
multiples of R or C, a fused MaxPool2d(2), Linear layers, ragged tiles (``tiles=`` overrides and
the smallest input buffer the compiler accepts), and networks whose layers use different
dataflows one after another. Random shapes come from hypothesis. The Amaranth simulator runs a
few thousand cycles per second, so the fast set gives each case one array per dataflow (arrays
rotate between dataflows); the slow set runs every case on every array, and many more random
networks.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import (AcceleratorConfig, _layers_from_ops, compile_network,
                                          fm_bankable)
from cnnforge.hw.frontend.network import Conv2d, Flatten, Linear, MaxPool2d, ReLU, ReLU6
from cnnforge.hw.models.perf import layer_model, network_model
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.rtl import rtl_accelerator
from tests.helpers import (compile_tight, cycle_limit, golden_layers, make_network,
                           random_images, random_network)

DATAFLOWS = ("or", "ir", "wr")


def direct(qnet):
    """``algorithms=`` keeping every layer direct (no Winograd): these tests are about the three
    dataflows of the direct convolution."""
    return {"+".join(o.name for o in grp): "direct" for grp in _layers_from_ops(qnet)}


def check_dataflow(program, images):
    """Run ``images`` through the RTL; every layer's map must equal the golden model and its
    counters the model's, and the engine's cycles per image the network model's."""
    images = np.asarray(images, np.int8)
    logits, layers, cycles = rtl_accelerator(program, images,
                                             max_cycles=cycle_limit(program, images))
    expected, golden = golden_layers(program, images)
    cfg = program.config
    models, total = network_model(program)
    for b, per_image in enumerate(layers):
        for layer, model, (counters, ofm), exp in zip(program.layers, models, per_image,
                                                      expected):
            where = (f"image {b}, layer {layer.name} ({layer.type}, {layer.dataflow.upper()} on "
                     f"{cfg.rows}x{cfg.cols}, tiles {layer.values['Tr']}x{layer.values['Tc']} "
                     f"-> {layer.values['ntr']}x{layer.values['ntc']})")
            assert ofm.shape == exp.shape[1:], where
            if not np.array_equal(ofm, exp[b]):
                bad = np.argwhere(ofm != exp[b])
                first = tuple(int(i) for i in bad[0])
                raise AssertionError(f"{where}: {len(bad)} of {ofm.size} values differ, first "
                                     f"at {first}: RTL {ofm[first]}, golden {exp[b][first]}")
            predicted = layer_model(layer.values, cfg).counters()
            assert predicted == model.counters()
            if counters != predicted:
                diff = {k: (counters[k], predicted[k]) for k in counters
                        if counters[k] != predicted[k]}
                raise AssertionError(f"{where}: RTL counters differ from the model "
                                     f"(name: (RTL, model)): {diff}")
        assert int(cycles[b]) == total, (b, int(cycles[b]), total)
    assert np.array_equal(logits, golden[-1].reshape(len(images), -1))
    return layers


# ------------------------------------------------------------------------------------------------
# Hand-picked layer shapes

def net_1x1():
    """1x1 conv, 5 input channels (not a multiple of 2, 3 or 4), 3 outputs, odd 5x3 map."""
    return make_network((5, 5, 3), [Conv2d(5, 3, 1), ReLU()], 21)


def net_3x3_pool():
    """3x3 pad 1 + ReLU + MaxPool2d(2) on an odd 5x7 map (last row and column dropped)."""
    return make_network((3, 5, 7), [Conv2d(3, 5, 3, padding=1), ReLU(), MaxPool2d(2)], 22)


def net_stride2_pad1():
    """3x3 stride 2 pad 1 + ReLU6 on 7x5, 7 output channels."""
    return make_network((2, 7, 5), [Conv2d(2, 7, 3, stride=2, padding=1), ReLU6()], 23)


def net_stride2_pad0():
    """3x3 stride 2 pad 0 on 9x7 (no activation), 3 -> 4 channels."""
    return make_network((3, 9, 7), [Conv2d(3, 4, 3, stride=2)], 24)


def net_linear():
    """Flatten + Linear + ReLU + Linear (1x1 maps, K = 15 and 6)."""
    return make_network((1, 3, 5), [Flatten(), Linear(15, 6), ReLU(), Linear(6, 3)], 25)


def net_conv_pool_linear():
    """3x3 pad 0 + ReLU + MaxPool2d(2) on 6x6 (4x4 -> 2x2), then Flatten + Linear."""
    return make_network((2, 6, 6), [Conv2d(2, 3, 3), ReLU(), MaxPool2d(2), Flatten(),
                                    Linear(12, 5)], 26)


SHAPES = {
    "1x1": net_1x1,
    "3x3-pool": net_3x3_pool,
    "s2p1": net_stride2_pad1,
    "s2p0": net_stride2_pad0,
    "linear": net_linear,
    "conv-pool-linear": net_conv_pool_linear,
}
ARRAYS = [(1, 1), (2, 3), (3, 2), (4, 4)]


def _fast_cases():
    """Each shape with each dataflow, on one array (rotating so every dataflow meets every
    array); the 1x1 array only on the cheapest shapes. conv-pool-linear only in the slow set
    (the smallest-buffer and mixed-dataflow tests run conv + pool + Linear in the fast set)."""
    cases = []
    for i, shape in enumerate(SHAPES):
        if shape == "conv-pool-linear":
            continue
        for j, df in enumerate(DATAFLOWS):
            array = ARRAYS[1 + (i + j) % 3]
            if shape in ("1x1", "linear"):
                array = ARRAYS[(i + j) % 4]
            cases.append((shape, df, array))
    return cases


FAST = _fast_cases()
SLOW = [(shape, df, array) for shape in SHAPES for df in DATAFLOWS for array in ARRAYS
        if (shape, df, array) not in FAST]


def _ids(cases):
    return [f"{s}-{df}-{r}x{c}" for s, df, (r, c) in cases]


@pytest.mark.parametrize("shape, dataflow, array", FAST, ids=_ids(FAST))
def test_dataflow_shapes(shape, dataflow, array):
    """The planner's tiles for the default buffer: maps == golden, counters == model."""
    qnet = quantize(SHAPES[shape]())
    program = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow),
                              algorithms=direct(qnet))
    assert all(layer.dataflow == dataflow for layer in program.layers)
    check_dataflow(program, random_images(qnet, 1, list(SHAPES).index(shape) * 3
                                           + DATAFLOWS.index(dataflow)))


@pytest.mark.slow
@pytest.mark.parametrize("shape, dataflow, array", SLOW, ids=_ids(SLOW))
def test_dataflow_shapes_all_arrays(shape, dataflow, array):
    """As :func:`test_dataflow_shapes` on the remaining arrays, two images."""
    qnet = quantize(SHAPES[shape]())
    program = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow),
                              algorithms=direct(qnet))
    check_dataflow(program, random_images(qnet, 2, 7))


# ------------------------------------------------------------------------------------------------
# Ragged tiles

def ragged_net():
    """3x3 pad 1 on 2 x 7 x 9 (output 7x9), 3 channels."""
    return make_network((2, 7, 9), [Conv2d(2, 3, 3, padding=1), ReLU()], 27)


# (dataflow, array, (Tr, Tc)): ragged last tiles in one or both directions, a tile narrower
# than the array, a one-row tile
RAGGED = [("or", (2, 3), (3, 4)), ("ir", (2, 3), (4, 2)), ("wr", (3, 2), (3, 4))]
RAGGED_SLOW = [("ir", (4, 4), (7, 2)), ("wr", (2, 2), (2, 9)), ("or", (3, 2), (1, 5)),
               ("wr", (1, 1), (3, 5)), ("ir", (3, 2), (2, 9))]


def _ragged_ids(cases):
    return [f"{df}-{r}x{c}-{t[0]}x{t[1]}" for df, (r, c), t in cases]


@pytest.mark.parametrize("dataflow, array, tile", RAGGED, ids=_ragged_ids(RAGGED))
def test_ragged_tile_overrides(dataflow, array, tile):
    """``tiles=`` overrides that leave ragged last tiles: maps == golden, counters == model."""
    check_ragged(dataflow, array, tile)


@pytest.mark.slow
@pytest.mark.parametrize("dataflow, array, tile", RAGGED_SLOW, ids=_ragged_ids(RAGGED_SLOW))
def test_ragged_tile_overrides_more(dataflow, array, tile):
    """As :func:`test_ragged_tile_overrides`: more tiles and arrays."""
    check_ragged(dataflow, array, tile)


def check_ragged(dataflow, array, tile):
    qnet = quantize(ragged_net())
    name = compile_network(qnet, AcceleratorConfig(*array)).layers[0].name
    program = compile_network(qnet, AcceleratorConfig(*array, input_buffer_bytes=1 << 14,
                                                      dataflow=dataflow),
                              tiles={name: tile}, algorithms=direct(qnet))
    v = program.layers[0].values
    assert (v["Tr"], v["Tc"]) == tile and v["ntr"] * v["ntc"] > 1
    assert 7 % tile[0] or 9 % tile[1]
    check_dataflow(program, random_images(qnet, 1, 3))


@pytest.mark.parametrize("dataflow, array", [("or", (2, 3)), ("ir", (3, 2)), ("wr", (2, 3))])
def test_smallest_buffer(dataflow, array):
    """The smallest input tile buffer the compiler accepts: many tiles, ping-pong halves
    alternating, ragged edges; conv + pool + Linear."""
    qnet = quantize(make_network((3, 6, 7), [Conv2d(3, 5, 3, padding=1), ReLU(), MaxPool2d(2),
                                             Flatten(), Linear(45, 4)], 28))
    program = compile_tight(qnet, *array, dataflow=dataflow, algorithms=direct(qnet))
    v = program.layers[0].values
    assert v["ntr"] * v["ntc"] >= 3, (v["ntr"], v["ntc"])
    check_dataflow(program, random_images(qnet, 1, 4))


# ------------------------------------------------------------------------------------------------
# Layers with different dataflows one after another

MIXES = [("or", "ir", "wr"), ("wr", "or", "ir"), ("ir", "wr", "or")]


@pytest.mark.parametrize("mix", MIXES, ids=["-".join(m) for m in MIXES])
def test_mixed_dataflows(mix):
    """conv (3x3 pad 1, pool) -> conv (1x1) -> Linear, each layer with its own dataflow: the
    input buffer layout (x- or channel-banked) and the partial-sum buffer switch between
    layers."""
    net = make_network((2, 6, 5), [Conv2d(2, 6, 3, padding=1), ReLU(), MaxPool2d(2),
                                   Conv2d(6, 4, 1), ReLU(), Flatten(), Linear(24, 5)], 29)
    qnet = quantize(net)
    names = [layer.name for layer in compile_network(qnet, AcceleratorConfig(3, 2)).layers]
    program = compile_network(qnet, AcceleratorConfig(3, 2), dataflows=dict(zip(names, mix)),
                              algorithms=direct(qnet))
    assert tuple(layer.dataflow for layer in program.layers) == mix
    check_dataflow(program, random_images(qnet, 1, 5))


# ------------------------------------------------------------------------------------------------
# Random shapes

RANDOM = dict(net=random_network(max_linear=1), array=st.sampled_from([(2, 2), (2, 3), (3, 2),
                                                                       (4, 4)]),
              dataflow=st.sampled_from(DATAFLOWS), tight=st.booleans(),
              lanes=st.sampled_from([1, 2]), products=st.sampled_from([1, 2, 3]),
              seed=st.integers(0, 2**32 - 1))


def check_random(net, array, dataflow, tight, lanes, products, seed, max_cycles):
    """``products`` 2 or 3: the ECP5 PEs and, as there, the weight ROM in banks (of 4 words)
    and the feature map (of 16 values) where the network allows it (no fused max-pool)."""
    qnet = quantize(net)
    banked = products > 1
    ecp5 = dict(product_registers=products, weight_bank_words=4 * banked,
                fm_bank_words=16 * banked * fm_bankable(qnet))
    if tight:
        program = compile_tight(qnet, *array, dataflow=dataflow, loader_lanes=lanes,
                                algorithms=direct(qnet), **ecp5)
    else:
        program = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow,
                                                          loader_lanes=lanes, **ecp5),
                                  algorithms=direct(qnet))
    assume(network_model(program)[1] <= max_cycles)      # keep the Python simulation short
    check_dataflow(program, random_images(qnet, 1, seed))


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(**RANDOM)
def test_random_shapes(net, array, dataflow, tight, lanes, products, seed):
    """Random conv (kernel 1-3, stride 1-2, padding 0-1, channels 1-7, maps 3-9, optional
    activation and pool) + Linear, each dataflow, default or smallest buffer, one or two
    loader lanes, one to three product registers in the PEs (more than one: the weight ROM
    banked)."""
    check_random(net, array, dataflow, tight, lanes, products, seed, max_cycles=3000)


@pytest.mark.slow
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(**RANDOM)
def test_random_shapes_many(net, array, dataflow, tight, lanes, products, seed):
    """As :func:`test_random_shapes`, many more and longer cases."""
    check_random(net, array, dataflow, tight, lanes, products, seed, max_cycles=12000)


def test_short_tiles_behind_a_banked_feature_map():
    """Input-reuse tiles loaded in two cycles (two lanes) behind the banked feature map's
    five-cycle read: the loader came round to a half whose tile's last write was still in its
    write stages (the half's flag not yet set), overwrote it, and the controller waited for a
    tile that never came (found by :func:`test_random_shapes_many`)."""
    net = make_network((1, 6, 3), [Conv2d(1, 6, 1, stride=2, padding=1), ReLU(), Flatten(),
                                   Linear(72, 1)], seed=0)
    qnet = quantize(net)
    program = compile_network(qnet, AcceleratorConfig(2, 2, dataflow="ir", loader_lanes=2,
                                                      fm_bank_words=16),
                              algorithms=direct(qnet))
    check_dataflow(program, random_images(qnet, 2, 0))


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("array", [(2, 2), (3, 2)])
def test_pointwise_on_one_row(dataflow, array):
    """1×1 layers run on their map as one row (the columns take pixels across the map's rows)
    next to 1×1 layers that keep the rows (padding, a fused pool, stride 2): maps == golden,
    counters == model."""
    net = make_network((3, 7, 5), [Conv2d(3, 8, 3, padding=1), ReLU(), Conv2d(8, 8, 1), ReLU(),
                                   Conv2d(8, 8, 1, padding=1), Conv2d(8, 4, 1), MaxPool2d(2),
                                   Conv2d(4, 4, 1, stride=2), Flatten(), Linear(16, 3)], 5)
    qnet = quantize(net)
    program = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow),
                              algorithms=direct(qnet))
    assert (program.layers[1].values["OH"], program.layers[1].values["OW"]) == (1, 35)
    check_dataflow(program, random_images(qnet, 2, 5))


@pytest.mark.parametrize("shape, array", [("3x3-pool", (2, 3)), ("s2p1", (3, 2)),
                                          ("conv-pool-linear", (2, 2)), ("1x1", (1, 1))])
def test_time_shared_post_processor(shape, array):
    """``ppu_interval=2`` (the requantizer's partial products time-shared over two DSP blocks):
    the OR drain hands over a result every other cycle and passes are at least 2·R·C + 1 beats;
    maps == golden, counters == model."""
    qnet = quantize(SHAPES[shape]())
    program = compile_network(qnet, AcceleratorConfig(*array, ppu_interval=2),
                              algorithms=direct(qnet))
    assert all(layer.values["L"] >= 2 * array[0] * array[1] + 1 for layer in program.layers)
    check_dataflow(program, random_images(qnet, 2, 7))


@pytest.mark.parametrize("shape, dataflow, array, lutram", [
    ("s2p1", "or", (2, 3), True), ("s2p0", "wr", (4, 2), False), ("1x1", "ir", (3, 2), True),
    ("3x3-pool", "or", (2, 2), False), ("conv-pool-linear", "wr", (2, 3), True)])
def test_two_loader_lanes(shape, dataflow, array, lutram):
    """``loader_lanes=2``: x pairs (x-banked layouts: stride 1 and 2, padding 0 and 1, ragged
    rows), channel pairs (WR's channel-banked tile on an even number of rows; odd channel
    counts leave lane 1 idle on the last pair), one lane in layers with a fused max-pool; with
    ``lutram_buffers``, two product registers, the weight ROM in banks (of 4 words here) and
    the feature map (of 8 values, without a max-pool) as the ECP5 designs (the feature map's
    data registered twice, or three times in banks); maps == golden, counters and cycles ==
    model."""
    qnet = quantize(SHAPES[shape]())
    fm_banks = 8 * lutram * fm_bankable(qnet)
    program = compile_tight(qnet, *array, dataflow=dataflow, loader_lanes=2,
                            lutram_buffers=lutram, product_registers=1 + lutram,
                            weight_bank_words=4 * lutram, fm_bank_words=fm_banks,
                            algorithms=direct(qnet))
    assert program.config.fm_bank_words == fm_banks
    pairs = [layer.values["ld_pair"] for layer in program.layers]
    assert not pairs[0] if shape == "3x3-pool" else any(pairs)
    check_dataflow(program, random_images(qnet, 1, 11))
