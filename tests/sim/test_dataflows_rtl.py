"""The IR and WR dataflows on Verilator (:mod:`cnnforge.sim.accel`) with the bundled digits
network: every layer's output map equals the golden model on 24 held-out digits, and the RTL's
per-layer counters (cycles and buffer accesses, the same for every image) and cycles per image
equal the analytic model (:func:`cnnforge.hw.models.perf.layer_model` / ``network_model``) exactly.

Builds go under ``build/test/`` (:func:`cnnforge.sim.runner.build_root`); rebuilding an
unchanged design is a no-op.
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
IMAGES = 24


@pytest.fixture(scope="module")
def digits():
    net = load_network(DIGITS)
    qnet = quantize(net)
    x, y = net.test_data()
    return qnet, qnet.quantize_input(x[:IMAGES]), y[:IMAGES]


@pytest.mark.slow
@pytest.mark.parametrize("dataflow, rows, cols", [("ir", 4, 4), ("wr", 4, 4), ("ir", 2, 3),
                                                  ("wr", 3, 2)])
def test_digits_dataflow(digits, dataflow, rows, cols):
    """24 digits, every layer IR (or WR), direct convolution: 0 mismatches on every layer and
    the logits, RTL accuracy = int8 golden accuracy, counters == model for every image."""
    qnet, images, labels = digits
    names = [layer.name for layer in compile_network(qnet, AcceleratorConfig(rows, cols)).layers]
    program = compile_network(qnet, AcceleratorConfig(rows, cols, dataflow=dataflow),
                              algorithms={name: "direct" for name in names})
    assert all(layer.dataflow == dataflow and layer.algorithm == "direct"
               for layer in program.layers)
    sim = AcceleratorSim(program, runner.build_root() / "test" /
                         f"digits-{dataflow}-{rows}x{cols}").build()
    result = sim.run(images)
    golden, mismatches = compare(program, images, result)
    assert mismatches["logits"] == 0, mismatches
    assert mismatches["layers"] == {layer.name: 0 for layer in program.layers}, mismatches
    assert np.mean(result.logits.argmax(axis=1) == labels) == \
        np.mean(golden[-1].reshape(IMAGES, -1).argmax(axis=1) == labels)
    models, total = network_model(program)
    expected = [model.counters() for model in models]
    assert len(result.layers) == IMAGES
    for b, per_image in enumerate(result.layers):
        measured = [counters for counters, _ in per_image]
        assert measured == expected, (b, measured, expected)
    assert result.cycles.tolist() == [total] * IMAGES
