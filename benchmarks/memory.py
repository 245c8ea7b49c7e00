"""Memory plans of the bundled and MLPerf Tiny models on the three target FPGAs: block RAM (EBR),
LUT RAM and SPRAM used against each device's budget, and whether the design fits.

Each model is compiled for the design ``cnnforge synth --device`` builds on that device (the
array :func:`cnnforge.hw.compiler.memory.device_config` gives the network: up5k 4x3 direct, or
4x2 where the 4x3's time-shared requantizer cannot run it, lfe5u-25f 4x4, lfe5u-85f 8x8; ECP5
input tile buffers in LUT RAM; on the UP5K the feature maps and weights moved into SPRAM where
block RAM is too small, :func:`cnnforge.hw.compiler.memory.fit_memories`) and placed by
:func:`cnnforge.hw.compiler.memory.plan_memory` (where the RTL puts every memory). Nothing is
synthesized: the planner reproduces the block RAM
counts of the digits network's synthesis runs (``tests/test_memory.py``); the other rows are
the planner's verdict. A second table tries the visual-wake-words model on the -85F at smaller
arrays (fewer int8 lanes per weight-ROM word, so less padding).

Run it (about a minute on a busy 2-core machine; compiling VWW dominates)::

    .venv/bin/python benchmarks/memory.py

Prints the tables and writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import machine_info

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import (EBR, LUTRAM, SPRAM, device_config, fit_memories,
                                         plan_memory)
from cnnforge.hw.compiler.program import compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import quantize

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "mlperf_tiny"
MODELS = {
    "digits": ROOT / "examples" / "digits" / "net.py",
    "KWS (DS-CNN)": TINY / "kws_ref_model.tflite",
    "ResNet-8": TINY / "pretrainedResnet_quant.tflite",
    "VWW (MobileNetV1-0.25)": TINY / "vww_96_int8.tflite",
}
#: Arrays tried for VWW on the -85F beyond its default 8x8.
VWW_ARRAYS = ((4, 4), (2, 2), (1, 1))
OUT = ROOT / "benchmarks" / "results" / "memory.json"


def load(path):
    network = load_network(path)
    quantized = getattr(network, "quantized", None)
    return quantized if quantized is not None else quantize(network)


def row(name, program, key, plan=None):
    """One table row: the plan's kinds, the weights (ROM in block RAM, or SPRAM), the
    verdict."""
    plan = plan or plan_memory(program, key)
    rom = next(m for m in plan.memories if m.spec.name in ("weight ROM", "weights"))
    cfg = program.config
    return {"model": name, "device": key, "array": f"{cfg.rows}x{cfg.cols}",
            "algorithm": cfg.algorithm, "spram_feature_maps": cfg.spram_feature_maps,
            "spram_weights": cfg.spram_weights, "weight_rom_bytes": rom.spec.bytes,
            "weight_rom_ebr": rom.blocks, **plan.to_json()}


def cell(kinds, kind):
    use = kinds[kind]
    return f"{use['used']}/{use['total']}" if use["total"] or use["used"] else "-"


def print_table(rows, title):
    print(f"\n{title}")
    head = (f"{'model':<24}{'device':<11}{'array':>6}{'EBR':>10}{'LUT RAM':>12}{'SPRAM':>7}"
            f"{'weight ROM':>12}  fits")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<24}{r['device']:<11}{r['array']:>6}{cell(r['kinds'], EBR):>10}"
              f"{cell(r['kinds'], LUTRAM):>12}{cell(r['kinds'], SPRAM):>7}"
              f"{r['weight_rom_bytes']:>12,}  {'yes' if r['fits'] else 'no'}")
    for r in rows:
        if not r["fits"]:
            print(f"  {r['model']} on {r['device']}: {r['reason']}")


def main():
    t0 = time.perf_counter()
    rows, vww_rows, qnets = [], [], {}
    for name, path in MODELS.items():
        qnets[name] = qnet = load(path)
        for key, dev in DEVICES.items():
            program, plan = fit_memories(qnet, device_config(qnet, dev), dev)
            rows.append(row(name, program, key, plan))
    dev = DEVICES["lfe5u-85f"]
    vww = "VWW (MobileNetV1-0.25)"
    for rows_, cols in VWW_ARRAYS:
        program = compile_network(qnets[vww], dev.config(rows_, cols))
        vww_rows.append(row(vww, program, dev.key))
    print_table(rows, "memory plans, each device's default design (cnnforge synth --device)")
    print_table(vww_rows, "VWW on lfe5u-85f at smaller arrays")
    result = {"machine": machine_info("amaranth"), "seconds": round(time.perf_counter() - t0, 1),
              "designs": "each device's design for the network (cnnforge synth --device): "
                         "up5k 4x3 or 4x2 direct (SPRAM where block RAM is too small), "
                         "lfe5u-25f 4x4, lfe5u-85f 8x8, ECP5 tile buffers in LUT RAM",
              "results": rows, "vww_on_lfe5u_85f": vww_rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {OUT.relative_to(ROOT)} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
