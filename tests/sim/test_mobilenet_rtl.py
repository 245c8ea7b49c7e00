"""MobileNet ops in the generated Verilog on Verilator: MobileNetV2 inverted-residual blocks
(expand 1×1 → depthwise 3×3 → project 1×1, with and without the residual add) bit-exact with the
golden model on every layer, every counter equal to the performance model, with stream gaps and
back-pressure; one block requantizes as an imported ONNX QDQ model does (one rounding, ties to
even), the other with gemmlowp's."""

from pathlib import Path

import pytest

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.accel import AcceleratorSim
from tests.helpers import build_dir, check_sim, inverted_residual, random_images


@pytest.mark.parametrize("residual, stride, array, rounding", [
    (True, 1, (4, 4), "nearest-even"), (False, 2, (3, 2), "gemmlowp")])
def test_inverted_residual_block_verilator(residual, stride, array, rounding):
    qnet = quantize(inverted_residual(c=6, expand=4, residual=residual, stride=stride,
                                      input_shape=(3, 9, 8)))
    for op in qnet.ops:
        op.rounding = rounding
    program = compile_network(qnet, AcceleratorConfig(*array))
    assert program.rounding == rounding
    assert "depthwise" in [layer.algorithm for layer in program.layers]
    assert ("eltwise" in [layer.algorithm for layer in program.layers]) == residual
    images = random_images(qnet, 4, 21)
    name = f"mbv2-{'res' if residual else 'plain'}-s{stride}-{array[0]}x{array[1]}-{rounding}"
    sim = AcceleratorSim(program, build_dir(name)).build()
    result = sim.run(images, gaps=0.2, backpressure=0.3, seed=2)
    check_sim(program, images, result)
    models, _ = network_model(program)
    for layer, (counters, _), model in zip(program.layers, result.layers[0], models):
        assert counters == model.counters(), (layer.name, counters, model.counters())


@pytest.mark.slow
def test_mobilenet_digits_qdq_onnx_end_to_end():
    """The PyTorch-exported, ONNX Runtime-quantized MobileNet-style digits network
    (examples/mobilenet_digits/model_qdq.onnx) on 100 real held-out digits: every layer of every
    image bit-exact with the golden model, RTL accuracy = golden accuracy."""
    import numpy as np

    from cnnforge.hw.frontend.loader import load_network
    folder = Path(__file__).resolve().parents[2] / "examples" / "mobilenet_digits"
    network = load_network(folder / "model_qdq.onnx")
    qnet = quantize(network)
    program = compile_network(qnet, AcceleratorConfig(4, 4))
    kinds = [layer.algorithm for layer in program.layers]
    assert kinds.count("depthwise") == 5 and kinds.count("eltwise") == 1
    assert program.rounding == "nearest-even"
    x = np.load(folder / "test_images.npy")
    labels = np.load(folder / "test_labels.npy")
    images = qnet.quantize_input(x)
    assert len(images) >= 100
    result = AcceleratorSim(program, build_dir("mobilenet-digits-4x4")).build().run(images)
    check_sim(program, images, result)
    assert np.mean(result.logits.argmax(axis=1) == labels) >= 0.9


@pytest.mark.slow
def test_cli_run_pytorch_export_with_calibration(tmp_path):
    """``cnnforge run`` on the float PyTorch export (examples/mobilenet_digits/model.onnx),
    quantized by cnnforge on the bundled calibration images: Verilog, Verilator, 20 real digits,
    0 RTL/golden mismatches on the logits and on every layer's map."""
    import json

    from cnnforge.hw.tools.cli import main
    folder = Path(__file__).resolve().parents[2] / "examples" / "mobilenet_digits"
    report = tmp_path / "report.json"
    status = main(["run", str(folder / "model.onnx"),
                   "--calibration", str(folder / "calibration.npy"),
                   "--inputs", str(folder / "test_images.npy"),
                   "--labels", str(folder / "test_labels.npy"), "--images", "20",
                   "--json", str(report), "--build-dir", str(build_dir("mobilenet-float-cli"))])
    result = json.loads(report.read_text())
    assert status == 0 and result["images"] == 20
    assert result["rtl_golden_mismatches"] == 0
    assert set(result["layer_mismatches"].values()) == {0} and len(result["layers"]) == 13
    assert result["rtl_accuracy"] == result["int8_accuracy"] >= 0.85
