"""Keyword spotting (MLPerf Tiny DS-CNN, unmodified) on the whole iCEBreaker core in Verilator:
the weights booted from the SPI flash or uploaded over the UART, the inputs sent over the UART,
the answers against TensorFlow Lite Micro.

The simulated design is the board's core (``icebreaker.SPEC.link_top``: UART host link, the
accelerator with its feature maps and weights in SPRAM, status LEDs) at the board's 30 MHz and
115200 baud, with a SPI flash model (``sim/spi_flash.py``) holding the weight image at the
board's weights offset (what ``cnnforge flash`` writes). Two runs of the same build
(:func:`cnnforge.sim.board_bench.tb_board`):

1. **flash**: boot (the weights read from the flash and checked), then the KWS sample and
   ``--inputs`` − 1 random int8 inputs over the UART;
2. **UART**: the flash image corrupted (the board refuses it), the 30 KB weight image uploaded
   in 1 KB weights frames, then the KWS sample.

Reported: the status after boot and after the upload, the outputs against TensorFlow Lite
Micro's (``tflite_micro`` reference kernels; expected identical) and the golden model's, the
class of the sample (5, as TensorFlow Lite Micro's), engine cycles per inference, and simulated
and wall time per phase. Results: ``benchmarks/results/icebreaker_kws.json``. About 10 minutes
on a 2-core machine (the upload is 2.7 s of simulated UART time, 7 minutes of simulation).

    .venv/bin/python benchmarks/icebreaker_kws.py
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import machine_info, tflm

from cnnforge.boards.icebreaker import SPEC
from cnnforge.hw.compiler.memory import fit_memories
from cnnforge.hw.compiler.program import weight_image
from cnnforge.hw.frontend.loader import load_network
from cnnforge.sim import runner as sr
from cnnforge.sim.golden import run_quantized
from cnnforge.sim.spi_flash import FlashBoard

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "mlperf_tiny" / "kws_ref_model.tflite"
SAMPLE = ROOT / "examples" / "mlperf_tiny" / "kws_sample_int8.npy"
RESULTS = Path(__file__).resolve().parent / "results" / "icebreaker_kws.json"


def run(runner, build_dir, name, stimulus):
    ex = sr.Exchange.create(build_dir, name, stimulus)
    t0 = time.perf_counter()
    sr.run(runner, "top", "cnnforge.sim.board_bench", testcase="tb_board", extra_env=ex.env())
    result = ex.read_results()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def check(qnet, xs, result):
    """The board's outputs against TensorFlow Lite Micro and the golden model."""
    logits = np.array(result["logits"], np.int64).astype(np.int8)
    images = qnet.model_input(xs[:len(logits)])
    golden = run_quantized(qnet, images)[-1].reshape(len(logits), -1)
    outputs = qnet.model_output(logits.reshape((len(logits),) + tuple(
        qnet.ops[-1].output_shape)))
    expected = tflm(MODEL, xs[:len(logits)])
    return {"outputs_equal_tflm": bool(np.array_equal(outputs.reshape(expected.shape),
                                                       expected)),
            "logits_equal_golden": bool(np.array_equal(logits, golden)),
            "classes": [int(c) for c in result["cls"]],
            "tflm_classes": [int(c) for c in expected.reshape(len(logits), -1).argmax(axis=1)]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=3, help="inputs of the flash run (the sample "
                   "first, then random)")
    args = p.parse_args()
    t0 = time.perf_counter()
    qnet = load_network(MODEL).quantized
    program, plan = fit_memories(qnet, SPEC.config(qnet), SPEC.device)
    weights = weight_image(program)
    core = SPEC.link_top(program)
    top = FlashBoard(core, weights, SPEC.weights_offset)
    build_dir = sr.build_root() / "bench" / "icebreaker_kws"
    src = sr.write_verilog(top, build_dir / "top.v", name="top")
    runner = sr.build([src], "top", build_dir / "sim_build")
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(15)
    xs = rng.integers(-128, 128, (args.inputs,) + qnet.model_input_shape).astype(np.int8)
    xs[0] = np.load(SAMPLE)[0]
    images = qnet.model_input(xs)
    common = {"clk_freq": core.clk_freq, "baud": core.baud, "output_size": program.output_size,
              "weights": np.frombuffer(weights, np.uint8), "chunk": 1024,
              "boot_cycles": 16 * len(weights) + 1000}
    flash = run(runner, build_dir, "flash", {**common, "images": images, "corrupt": 0,
                                             "upload": 0})
    uart = run(runner, build_dir, "uart", {**common, "images": images[:1], "corrupt": 1,
                                           "upload": 1})
    out = {"machine": machine_info("verilator", "cocotb", "amaranth", "tflite-micro"),
           "model": MODEL.name, "array": [program.config.rows, program.config.cols],
           "spram_feature_maps": program.config.spram_feature_maps,
           "spram_weights": program.config.spram_weights,
           "memory": plan.to_json(compact=True), "weight_bytes": len(weights),
           "core_mhz": core.clk_freq / 1e6, "baud": core.baud, "build_s": round(build_s, 1),
           "flash": {**flash, **check(qnet, xs, flash)},
           "uart": {**uart, **check(qnet, xs, uart)}}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for name in ("flash", "uart"):
        r = out[name]
        print(f"{name}: status after boot {r['status_after_boot']}, "
              + (f"after upload {r.get('status_after_upload')}, " if name == "uart" else "")
              + f"outputs == TFLM {r['outputs_equal_tflm']}, logits == golden "
              f"{r['logits_equal_golden']}, classes {r['classes']}, cycles {r['cycles']}, "
              f"phases {json.dumps(r['phases'])}")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
