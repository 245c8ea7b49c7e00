"""The unmodified MLPerf Tiny models (``examples/mlperf_tiny/``) on Verilator, as slow tests with
few inputs: every layer map bit-exact with the golden model, the outputs identical to TensorFlow
Lite Micro's, the KWS sample classified as class 5 (``benchmarks/mlperf_tiny.py`` runs three
inputs per model and reports the cycles)."""

from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import device_config
from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.models.perf import network_model
from cnnforge.sim.accel import AcceleratorSim
from tests.helpers import build_dir, check_sim
from tests.tflite_models import run_tflm

MODELS = Path(__file__).resolve().parents[2] / "examples" / "mlperf_tiny"


MLPERF_RTL = [  # model file, array, ECP5 device's design (else the default one), inputs
    ("kws_ref_model.tflite", (4, 4), None, 3),
    ("pretrainedResnet_quant.tflite", (4, 4), "lfe5u-85f", 1),
    ("vww_96_int8.tflite", (8, 8), "lfe5u-85f", 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, array, device, count", MLPERF_RTL,
                         ids=[m[0].split(".")[0] for m in MLPERF_RTL])
def test_mlperf_tiny_verilator(name, array, device, count):
    """The unmodified MLPerf Tiny models on Verilator: every layer map bit-exact, every layer's
    counters and the cycles per inference equal to the cycle model's, the outputs identical to
    TensorFlow Lite Micro's, the KWS sample classified as class 5. ResNet-8 and VWW as the
    LFE5U-85F's design builds them (``device_config``: the loader's two lanes, LUT-RAM tile
    buffers, three product registers, the weight ROM in banks; VWW's feature map in banks too,
    ResNet-8's adds keep it in one memory)."""
    path = MODELS / name
    qnet = load_network(path).quantized
    config = (device_config(qnet, DEVICES[device], *array) if device else
              AcceleratorConfig(*array))
    assert config.fm_bank_words == (2048 if name.startswith("vww") else 0)
    assert config.product_registers == (3 if device else 1)
    program = compile_network(qnet, config)
    rng = np.random.default_rng(18)
    xs = rng.integers(-128, 128, (count,) + qnet.model_input_shape).astype(np.int8)
    if name.startswith("kws"):
        xs[0] = np.load(MODELS / "kws_sample_int8.npy")[0]
    images = qnet.model_input(xs)
    sim = AcceleratorSim(program, build_dir(f"mlperf-{name.split('.')[0]}")).build()
    result = sim.run(images)
    check_sim(program, images, result)
    models, total = network_model(program)
    for per_image in result.layers:
        assert [counters for counters, _ in per_image] == [lm.counters() for lm in models]
    assert [int(c) for c in result.cycles] == [total] * count
    outputs = qnet.model_output(result.logits)
    expected = np.concatenate([run_tflm(path.read_bytes(), x[None]) for x in xs])
    assert np.array_equal(outputs, expected)
    if name.startswith("kws"):
        assert int(outputs[0].argmax()) == 5
