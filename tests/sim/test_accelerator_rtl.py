"""The generated accelerator Verilog on Verilator (:mod:`cnnforge.sim.accel`), against the golden
model: every layer's output map and the logits, bit for bit, on a random small network with
stream gaps and back-pressure and on the bundled digits network on several array shapes.

Builds go under ``build/test/`` (:func:`cnnforge.sim.runner.build_root`); rebuilding an
unchanged design is a no-op, so a second run of these tests only pays for the simulation.
"""

import copy
from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.network import ReLU, ReLU6
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.rtl.common import COUNTERS
from cnnforge.sim.accel import AcceleratorSim, SimulationStall, compare, watchdog_cycles
from tests.helpers import (build_dir, check_sim, compile_tight, conv_net, random_images,
                           tile_counts)

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "net.py"


# ------------------------------------------------------------------------------------------------
# (a) a random small network, 3x2 array, stream gaps and back-pressure


def seeded_network(seed):
    """A small random Conv2d [+ReLU/ReLU6] [+MaxPool2d(2)] + Flatten + Linear + ReLU + Linear
    network (shapes drawn from ``seed``, as tests/hw/test_accelerator.py's random networks)."""
    rng = np.random.default_rng(seed)
    k = int(rng.choice([2, 3]))
    stride, padding = int(rng.integers(1, 3)), int(rng.integers(0, 2))
    h, w = (int(v) for v in rng.integers(5, 10, 2))
    n, m = (int(v) for v in rng.integers(1, 8, 2))
    act = [None, "ReLU", "ReLU6"][int(rng.integers(0, 3))]
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    return conv_net(seed, (n, h, w), m=m, k=k, stride=stride, padding=padding,
                    act={"ReLU": ReLU, "ReLU6": ReLU6, None: None}[act],
                    pool=min(oh, ow) >= 2 and bool(rng.integers(0, 2)),
                    hidden=int(rng.integers(2, 9)), out=int(rng.integers(1, 11)))


def split_first_layer(program):
    """The debug bytes of the first layer's record (counters and output map)."""
    return range(4 * len(COUNTERS) + program.layers[0].values["out_size"])


def test_random_network_3x2_with_stalls():
    """Six images (one all int8 extremes) through a random network tiled for the smallest input
    buffer, with 30 % input gaps and 50 % output back-pressure: every layer equals the golden
    model. Then ``compare`` must notice a single corrupted value."""
    net = seeded_network(2025)
    qnet = quantize(net)
    program = compile_tight(qnet, 3, 2)
    assert max(ntr * ntc for ntr, ntc in tile_counts(program).values()) > 1
    images = random_images(qnet, 6, 3)
    sim = AcceleratorSim(program, build_dir("random-3x2")).build()
    result = sim.run(images, gaps=0.3, backpressure=0.5, seed=5)
    check_sim(program, images, result)
    clean = sim.run(images, name="clean")
    check_sim(program, images, clean)
    assert np.array_equal(result.cycles, clean.cycles)
    # the harness's random source and sink did pause the streams
    assert result.sim_cycles > clean.sim_cycles
    # the watchdog: a consumer that stops taking beats for good is reported, never waited for
    per_image = len(split_first_layer(program))
    for stall_after, where in ((3, f"in layer {program.layers[0].name} "),
                               (per_image + 5, f"in layer {program.layers[1].name} ")):
        with pytest.raises(SimulationStall) as info:
            sim.run(images[:2], gaps=0.2, backpressure=0.3, name="stall",
                    stall_after=stall_after)
        message = str(info.value)
        assert message.startswith("image 0: the accelerator stalled: no beat on the ")
        assert f"for {watchdog_cycles(program, 0.2, 0.3):,} cycles" in message
        assert where in message and "\n" not in message, message
    with pytest.raises(ValueError, match="gaps=1.0 is not a probability"):
        sim.run(images, gaps=1.0)

    # a deliberately broken harness, under the same gaps and back-pressure: a debug byte lost
    # in the first layer's map, or an image byte sent twice, is caught by the comparison
    record = 4 * len(COUNTERS)                  # layer 0's map follows its counters
    for fault, where in ((("drop", record + 1), program.layers[0].name),
                         (("repeat", 1), program.layers[0].name)):
        broken = sim.run(images, gaps=0.3, backpressure=0.5, seed=5, name=fault[0],
                         fault=fault)
        _, mismatches = compare(program, images, broken)
        assert mismatches["layers"][where] > 0, (fault, mismatches)
        assert (mismatches["logits"] > 0) == (fault[0] == "repeat"), (fault, mismatches)

    # the checker itself: one flipped value in one layer of one image, one wrong logit
    bad = copy.deepcopy(result)
    counters, ofm = bad.layers[4][1]
    ofm = ofm.copy()
    ofm.flat[0] ^= 1
    bad.layers[4][1] = (counters, ofm)
    bad.logits = bad.logits.copy()
    bad.logits[2, -1] ^= 1
    _, mismatches = compare(program, images, bad)
    assert mismatches["logits"] == 1
    assert mismatches["layers"][program.layers[1].name] == 1
    assert sum(mismatches["layers"].values()) == 1


# ------------------------------------------------------------------------------------------------
# (b), (c) the digits network


@pytest.fixture(scope="module")
def digits():
    net = load_network(DIGITS)
    qnet = quantize(net)
    x, y = net.test_data()
    return net, qnet, qnet.quantize_input(x), y


def run_digits(digits, rows, cols, count, **config):
    net, qnet, xq, y = digits
    program = compile_network(qnet, AcceleratorConfig(rows, cols, **config))
    images, labels = xq[:count], y[:count]
    name = "-".join([f"digits-{rows}x{cols}"] + [f"{k}{int(v)}" for k, v in config.items()])
    sim = AcceleratorSim(program, build_dir(name)).build()
    result = sim.run(images)
    golden, _ = compare(program, images, result)
    check_sim(program, images, result)
    rtl_accuracy = float(np.mean(result.logits.argmax(axis=1) == labels))
    int8_accuracy = float(np.mean(golden[-1].argmax(axis=1) == labels))
    assert rtl_accuracy == int8_accuracy
    return program, result, int8_accuracy


@pytest.mark.slow
@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 8)])
def test_digits(digits, rows, cols):
    """150 held-out digits: 0 mismatches on every layer, RTL accuracy = int8 accuracy (≥ 90 %)."""
    _, result, accuracy = run_digits(digits, rows, cols, 150)
    assert len(result.logits) == 150
    assert accuracy >= 0.9


@pytest.mark.slow
def test_digits_lutram_buffers(digits):
    """The ECP5 boards' tile buffers (``lutram_buffers``: read between a registered address and
    a registered output, the loader's feature-map data registered twice), PEs (two product
    registers), weight ROM (banks of 64 words: the 4x4 digits ROM's 498 words in eight) and
    parameter ROM (banked with it) on the 25F's 4x4 array: 30 digits, 0 mismatches on every
    layer, and the block-RAM design's cycles plus what the model adds for them (nine per
    layer: the second to fifth tile read cycles, each layer's first tile landing a cycle
    later, the array's latency, the parameter ROM's three; the later tiles' loads hide under
    the compute)."""
    lut_program, result, _ = run_digits(digits, 4, 4, 30, lutram_buffers=True,
                                        product_registers=2, weight_bank_words=64)
    sync_program, sync_result, _ = run_digits(digits, 4, 4, 30)
    extra = network_model(lut_program)[1] - network_model(sync_program)[1]
    assert extra == 9 * len(lut_program.layers)
    assert np.all(result.cycles - sync_result.cycles == extra)


@pytest.mark.slow
def test_digits_8x8(digits):
    """The largest array of the brief: 8x8 (64 PEs, more rows than the first layer's channels)."""
    program, _, _ = run_digits(digits, 8, 8, 6)
    assert program.weights.shape[1] >= 8
