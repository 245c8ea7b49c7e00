"""The bundled digits network with both 3×3 layers on Winograd F(2×2, 3×3), on Verilator
(:mod:`cnnforge.sim.accel`): 120 held-out digits, 0 mismatches on every layer and the logits,
RTL accuracy = int8 golden accuracy, and every layer's counters (cycles and buffer accesses,
the same for every image) and the cycles per image equal the analytic model.

Arrays: 4×4 (the second layer's 4×4 map is 2 tiles wide: half the columns idle) and 4×2
(non-square; its two columns take exactly one tile row of that layer). Builds go under
``build/test/winograd-*`` (:func:`cnnforge.sim.runner.build_root`); rebuilding an unchanged
design is a no-op.
"""

from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim import runner
from cnnforge.sim.accel import AcceleratorSim, compare

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "net.py"
IMAGES = 120


@pytest.fixture(scope="module")
def digits():
    net = load_network(DIGITS)
    qnet = quantize(net)
    x, y = net.test_data()
    return qnet, qnet.quantize_input(x[:IMAGES]), y[:IMAGES]


@pytest.mark.slow
@pytest.mark.parametrize("rows, cols", [(4, 4), (4, 2)])
def test_digits_winograd(digits, rows, cols):
    """120 digits with both 3×3 layers on Winograd (the Linear direct): 0 mismatches on every
    layer and the logits, RTL accuracy = int8 accuracy, counters == model for every image."""
    qnet, images, labels = digits
    program = compile_network(qnet, AcceleratorConfig(rows, cols, algorithm="winograd"))
    assert [layer.algorithm for layer in program.layers] == ["winograd", "winograd", "direct"]
    sim = AcceleratorSim(program, runner.build_root() / "test" /
                         f"winograd-digits-{rows}x{cols}").build()
    result = sim.run(images)
    golden, mismatches = compare(program, images, result)
    assert mismatches["logits"] == 0, mismatches
    assert mismatches["layers"] == {layer.name: 0 for layer in program.layers}, mismatches
    rtl_accuracy = np.mean(result.logits.argmax(axis=1) == labels)
    int8_accuracy = np.mean(golden[-1].reshape(IMAGES, -1).argmax(axis=1) == labels)
    assert rtl_accuracy == int8_accuracy
    assert int8_accuracy >= 0.9
    models, total = network_model(program)
    expected = [model.counters() for model in models]
    assert len(result.layers) == IMAGES
    for b, per_image in enumerate(result.layers):
        measured = [counters for counters, _ in per_image]
        assert measured == expected, (b, measured, expected)
    assert result.cycles.tolist() == [total] * IMAGES
