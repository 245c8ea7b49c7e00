"""Depthwise convolution, average pooling and residual add on the accelerator (Amaranth
simulator): every layer's map bit-exact with the golden model, every counter equal to the
performance model, on random shapes (odd sizes, channels not multiples of the array, stride 2,
padding 0/1, several tiles) and on MobileNetV2 inverted-residual blocks."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import (AcceleratorConfig, ConfigError, compile_network,
                                          fm_bankable)
from cnnforge.hw.frontend.network import (Add, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Flatten,
                                          Linear, MaxPool2d, NetworkError, ReLU, ReLU6)
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.rtl import rtl_accelerator
from tests.helpers import (check_result, compile_tight, cycle_limit, inverted_residual,
                           make_network, random_images)

ARRAYS = [(1, 1), (2, 3), (3, 2), (4, 4)]


def run_checked(program, images=None, seed=0):
    """RTL vs golden on every layer, and RTL counters == model counters on every layer."""
    if images is None:
        images = random_images(program.qnet, 2, seed)
    logits, layers, cycles = rtl_accelerator(program, images,
                                             max_cycles=cycle_limit(program, images))
    check_result(program, images, logits, layers, cycles)
    models, _ = network_model(program)
    for layer, (counters, _), model in zip(program.layers, layers[0], models):
        assert counters == model.counters(), (layer.name, layer.type, counters,
                                              model.counters())
    return layers


@st.composite
def depthwise_network(draw):
    """Conv2d stem, depthwise k×k (stride 1/2, padding 0/1) [+act] [+MaxPool2d(2)], pointwise,
    optional AvgPool2d(2) or global average pool, Flatten, Linear; depthwise channels 2..9 (rarely multiples of the array)."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(2, 9))
    k = draw(st.sampled_from([1, 2, 3]))
    s = draw(st.sampled_from([1, 2]))
    p = draw(st.sampled_from([0, 1]))
    h = draw(st.integers(max(3, k - 2 * p), 8))
    w = draw(st.integers(max(3, k - 2 * p), 8))
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    layers = [Conv2d(n, c, 1), Conv2d(c, c, k, stride=s, padding=p, groups=c)]
    layers += {"relu": [ReLU()], "relu6": [ReLU6()], "none": []}[
        draw(st.sampled_from(["relu", "relu6", "none"]))]
    if min(oh, ow) >= 2 and draw(st.booleans()):
        layers.append(MaxPool2d(2))
        oh, ow = oh // 2, ow // 2
    m = draw(st.integers(1, 7))
    layers.append(Conv2d(c, m, 1))
    pool = draw(st.sampled_from(["none", "avg2", "global"]))
    if pool == "avg2" and min(oh, ow) >= 2:
        layers.append(AvgPool2d(2))
        oh, ow = oh // 2, ow // 2
    elif pool == "global":          # one window over the whole map (stride = the map)
        layers.append(AdaptiveAvgPool2d(1))
        oh = ow = 1
    layers += [Flatten(), Linear(m * oh * ow, 3)]
    return make_network((n, h, w), layers, draw(st.integers(0, 2**32 - 1)))


def random_program(net, array, tight, lutram, interval, dataflow, lanes):
    """``net`` compiled for ``array`` as the random depthwise tests draw it (the dense layers'
    ``dataflow`` network-wide: output reuse only with ``interval`` 2; ``lanes`` loader
    lanes; with ``lutram`` two product registers in the PEs, the weight ROM in banks of 8
    words and, without a max-pool, the feature map in banks of 32 values, as the ECP5
    designs)."""
    qnet = quantize(net)
    dataflow = "or" if interval > 1 else dataflow
    ecp5 = dict(lutram_buffers=lutram, product_registers=1 + lutram,
                weight_bank_words=8 * lutram,
                fm_bank_words=32 * lutram * fm_bankable(qnet))
    if tight:
        return compile_tight(qnet, *array, dataflow=dataflow, ppu_interval=interval,
                             loader_lanes=lanes, **ecp5)
    return compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow,
                                                   ppu_interval=interval, loader_lanes=lanes,
                                                   **ecp5))


DRAWS = (depthwise_network(), st.sampled_from(ARRAYS), st.booleans(), st.booleans(),
         st.sampled_from([1, 2]), st.sampled_from(["or", "auto", "ir", "wr"]),
         st.sampled_from([1, 2]), st.integers(0, 2**32 - 1))


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(*DRAWS)
def test_random_depthwise_networks(net, array, tight, lutram, interval, dataflow, lanes, seed):
    """Random depthwise layers (with max-pool / average pool after them), on every array size,
    with the default buffer or the smallest one the compiler accepts (several tiles), the tile
    buffers in block or distributed RAM (``lutram_buffers``), the post-processor taking a
    result every cycle or every other (``ppu_interval``), the dense layers in any dataflow,
    one or two loader lanes."""
    program = random_program(net, array, tight, lutram, interval, dataflow, lanes)
    assert "depthwise" in [layer.algorithm for layer in program.layers]
    run_checked(program, seed=seed)


@pytest.mark.slow
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(*DRAWS)
def test_random_depthwise_networks_many(net, array, tight, lutram, interval, dataflow, lanes,
                                       seed):
    """As :func:`test_random_depthwise_networks`, many more cases."""
    run_checked(random_program(net, array, tight, lutram, interval, dataflow, lanes), seed=seed)


def test_short_passes_behind_a_banked_weight_rom():
    """A 1×1 array's two-beat passes behind the banked weight ROM's five-cycle read: six passes
    in flight between the controller and the drain, which the pass metadata FIFO holds
    (``pass_fifo_depth``; at a fixed four entries the depthwise layer's results were lost)."""
    net = make_network((3, 8, 5), [Conv2d(3, 6, 1), Conv2d(6, 6, 1, padding=1, groups=6),
                                   Conv2d(6, 7, 1), AdaptiveAvgPool2d(1), Flatten(),
                                   Linear(7, 3)], seed=5)
    program = compile_network(quantize(net), AcceleratorConfig(
        1, 1, lutram_buffers=True, product_registers=2, weight_bank_words=8, loader_lanes=2))
    run_checked(program)


@pytest.mark.parametrize("dataflow", ["ir", "wr"])
def test_stationary_after_depthwise_rows(dataflow):
    """An input- or weight-stationary layer right after a depthwise layer in the row mapping
    (whose last beats are past kw, with their weights zeroed): the zeroing does not outlive the
    layer (it once zeroed every weight of the next IR/WR layer)."""
    net = make_network((2, 4, 5), [Conv2d(2, 8, 3, padding=1), ReLU(),
                                    Conv2d(8, 8, (4, 5), groups=8), ReLU(), Flatten(),
                                    Linear(8, 12)], seed=3)
    qnet = quantize(net)
    program = compile_network(qnet, AcceleratorConfig(4, 4),
                              dataflows={"5": dataflow})
    assert program.depthwise_rows and program.layers[-1].dataflow == dataflow
    run_checked(program)


@pytest.mark.parametrize("array, lanes", [((2, 3), 1), ((4, 4), 1), ((4, 4), 2)])
@pytest.mark.parametrize("residual, stride", [(True, 1), (False, 1), (False, 2)])
def test_inverted_residual_block(residual, stride, array, lanes):
    """MobileNetV2's inverted residual (with the skip for stride 1, without it for stride 2
    and as a plain block): every layer bit-exact, counters == model; with one loader lane or
    two (the depthwise row mapping's channel pairs, x pairs elsewhere)."""
    qnet = quantize(inverted_residual(residual=residual, stride=stride))
    program = compile_network(qnet, AcceleratorConfig(*array, loader_lanes=lanes))
    kinds = [layer.algorithm for layer in program.layers]
    assert kinds == (["direct", "direct", "depthwise", "direct"]
                     + (["eltwise"] if residual else []) + ["depthwise", "direct"])
    run_checked(program)


def test_add_variants():
    """Add with the network input as a source, both sources explicit, a fused ReLU after the
    add, and an add of flat (Linear) outputs; three live tensors need three slots."""
    layers = [Conv2d(3, 3, 3, padding=1),              # 0
              Add(-1),                                 # 1: conv + image
              ReLU(),                                  # 2: fused into the add
              Conv2d(3, 3, 1),                         # 3
              Add(2, 3),                               # 4: both explicit
              Flatten(),                               # 5
              Linear(3 * 5 * 4, 6),                    # 6
              Linear(6, 6),                            # 7
              Add(6)]                                  # 8: flat add
    qnet = quantize(make_network((3, 5, 4), layers, 11))
    program = compile_network(qnet, AcceleratorConfig(3, 2))
    adds = [layer for layer in program.layers if layer.dataflow == "eltwise"]
    assert [layer.type for layer in adds] == ["Add+ReLU", "Add", "Add"]
    assert adds[0].values["act_min"] == adds[0].ops[0].output_zero_point
    assert program.fm_depth == 3 * 60
    run_checked(program)


def test_chain_keeps_two_feature_map_slots():
    qnet = quantize(make_network((2, 6, 6), [Conv2d(2, 3, 3), Conv2d(3, 3, 3, groups=3),
                                             Flatten(), Linear(12, 2)], 5))
    program = compile_network(qnet, AcceleratorConfig(2, 2))
    region = program.fm_depth // 2
    assert [(layer.values["src"], layer.values["dst"]) for layer in program.layers] == [
        (0, region), (region, 0), (0, region)]


def test_depthwise_refusals():
    """Grouped (not depthwise) convolution, a depthwise layer on IR/WR or on Winograd: one-line
    errors naming the layer."""
    qnet = quantize(make_network((4, 5, 5), [Conv2d(4, 4, 3, groups=2), Flatten(),
                                             Linear(36, 2)], 1))
    with pytest.raises(NetworkError, match=r"^layer 0 \(Conv2d\): groups=2: the accelerator runs "
                                           r"dense \(groups=1\) and depthwise"):
        compile_network(qnet)
    qnet = quantize(make_network((4, 5, 5), [Conv2d(4, 4, 3, groups=4), Flatten(),
                                             Linear(36, 2)], 1))
    with pytest.raises(ConfigError, match=re.escape(
            "layer 0 (Conv2d): a depthwise layer runs output stationary only (dataflow 'or'), "
            "not 'wr'")):
        compile_network(qnet, dataflows={"0": "wr"})
    with pytest.raises(NetworkError, match=r"^layer 0 \(Conv2d\): Winograd F\(2x2, 3x3\) needs a "
                                           r"3x3 kernel with stride 1 and groups=1"):
        compile_network(qnet, algorithms={"0": "winograd"})
    # 'auto' dataflow keeps the depthwise layer output stationary, the others choose
    program = compile_network(qnet, AcceleratorConfig(2, 2, dataflow="auto"))
    assert program.layers[0].dataflow == "or"
    # a network-wide IR or WR applies where it can: the depthwise layer (and the average pool,
    # a depthwise convolution) keep OR
    qnet = quantize(inverted_residual())
    for flow in ("ir", "wr"):
        program = compile_network(qnet, AcceleratorConfig(4, 4, dataflow=flow))
        flows = {layer.ops[0].category: layer.dataflow for layer in program.layers
                 if layer.ops[0].category not in ("add", "flatten")}
        assert flows == {"conv": flow, "pointwise": flow, "depthwise": "or", "avgpool": "or",
                         "fc": flow}, flows


def test_depthwise_utilization_bound():
    """Stride 1: the row mapping (each row its own channel, the inputs broadcast along the row)
    keeps every PE busy on kw of every kw + C − 1 beats (K = kh·(kw + C − 1) beats per pass),
    well above the lane mapping's 1/R; stride 2 keeps the lane mapping (one row of R busy,
    K = R·kh·kw, and there the loader's one value per cycle dominates). The model says where
    the time goes; the RTL agrees (run_checked)."""
    for stride in (1, 2):
        qnet = quantize(make_network(
            (16, 10, 10), [Conv2d(16, 16, 3, stride=stride, padding=1, groups=16),
                           AdaptiveAvgPool2d(1), Flatten(), Linear(16, 2)], 2))
        program = compile_network(qnet, AcceleratorConfig(4, 4))
        dw = program.layers[0]
        layers = run_checked(program)
        measured = layers[0][0][0]["cycles"]
        utilization = dw.macs / (16 * measured)
        if stride == 1:
            assert dw.values["dw_rows"] == 1 and dw.values["K"] == 3 * (3 + 4 - 1)
            assert np.isclose(dw.passes * dw.values["L"] / measured, 1, atol=0.35)
            assert 1 / 4 < utilization < 3 / 6
        else:
            assert dw.values["dw_rows"] == 0 and dw.values["K"] == 4 * 9
            assert utilization < 1 / 4