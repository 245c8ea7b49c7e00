"""Helpers the accelerator tests share: random networks, tight compilation (many tiles), golden
layer maps and the bit-exact check of an RTL run (Amaranth simulator or Verilator)."""

import math
import re

import numpy as np
from amaranth.sim import Simulator
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import AcceleratorConfig, ConfigError, compile_network
from cnnforge.hw.frontend.network import (Add, AdaptiveAvgPool2d, Conv2d, Flatten, Linear,
                                          MaxPool2d, ReLU, ReLU6, Sequential)
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import network_model, or_beats
from cnnforge.sim import runner
from cnnforge.sim.accel import compare
from cnnforge.sim.golden import run_quantized
from cnnforge.sim.rtl import rtl_accelerator

__all__ = ["build_dir", "check_result", "check_sim", "compile_tight", "conv_net", "golden_layers",
           "inverted_residual", "layer_cycles", "make_network", "random_images",
           "random_network", "run_and_check", "simulate", "tile_counts"]

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
                  lutram_buffers=False, ppu_interval=1, loader_lanes=1, product_registers=1,
                  weight_bank_words=0, fm_bank_words=0, **kwargs):
    """Compile with the smallest input tile buffer the compiler accepts (times ``slack``), found
    from its own error message ("... needs N bytes of input tile buffer ..."), so the planner
    has to cut layers into several tiles."""
    budget = cols

    def config(budget):
        return AcceleratorConfig(rows, cols, input_buffer_bytes=budget, dataflow=dataflow,
                                 algorithm=algorithm, lutram_buffers=lutram_buffers,
                                 ppu_interval=ppu_interval, loader_lanes=loader_lanes,
                                 product_registers=product_registers,
                                 weight_bank_words=weight_bank_words,
                                 fm_bank_words=fm_bank_words)
    for _ in range(20):
        try:
            compile_network(qnet, config(budget), **kwargs)
            break
        except ConfigError as exc:
            need = re.search(r"needs (\d+) bytes", str(exc))
            assert need and int(need.group(1)) > budget, str(exc)
            budget = int(need.group(1))
    budget = max(cols, int(budget * slack))
    return compile_network(qnet, config(budget), **kwargs)


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
                # OR issues one beat per cycle: a layer takes at least its passes' beats
                assert layer_cycles(counters) >= or_beats(layer.values, program.config), (
                    layer.name, counters)
        # the engine's image counter covers every layer (and the sequencing between them)
        assert cycles[b] >= sum(layer_cycles(c) for c, _ in per_image), (b, cycles[b])
    assert np.array_equal(logits, golden[-1].reshape(len(images), -1))
    return golden


def cycle_limit(program, images):
    """A bound on the simulated cycles of ``images`` (``rtl_accelerator``'s ``max_cycles``):
    the model's cycles four times over and 10,000 more an image, so that a hang fails in
    seconds rather than after the default two million cycles."""
    return len(images) * (4 * network_model(program)[1] + 10_000)


def run_and_check(program, images, **kwargs):
    kwargs.setdefault("max_cycles", cycle_limit(program, images))
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


def tile_counts(program):
    return {layer.name: (layer.values["ntr"], layer.values["ntc"]) for layer in program.layers}


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


def inverted_residual(c=5, expand=3, residual=True, stride=1, input_shape=(3, 7, 9)):
    """MobileNetV2 block after a stem: expand 1×1 + ReLU6, depthwise 3×3 + ReLU6, project 1×1
    (linear bottleneck) [+ the block input], global average pool, Linear."""
    hidden = c * expand
    layers = [Conv2d(input_shape[0], c, 3, padding=1), ReLU6(),
              Conv2d(c, hidden, 1), ReLU6(),
              Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden), ReLU6(),
              Conv2d(hidden, c, 1)]
    if residual:
        layers.append(Add(1))
    layers += [AdaptiveAvgPool2d(1), Flatten(), Linear(c, 4)]
    return make_network(input_shape, layers, seed=7 + stride + residual)


def simulate(dut, bench, period=1e-8):
    """Run the testbench coroutine ``bench`` against ``dut`` in Amaranth's simulator."""
    sim = Simulator(dut)
    sim.add_clock(period)
    sim.add_testbench(bench)
    sim.run()


def build_dir(name):
    return runner.build_root() / "test" / name


def check_sim(program, images, result):
    """``compare`` reports no mismatch, and the independent per-layer check agrees."""
    _, mismatches = compare(program, images, result)
    assert mismatches["logits"] == 0, mismatches
    assert mismatches["layers"] == {layer.name: 0 for layer in program.layers}, mismatches
    check_result(program, images, result.logits, result.layers, result.cycles)
