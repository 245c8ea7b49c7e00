"""The MLPerf Tiny reference models (``examples/mlperf_tiny/``) on the accelerator: the golden
model against TensorFlow Lite Micro, and ``cnnforge run`` on Verilator.

For each model — keyword spotting DS-CNN and ResNet-8 on a 4x4 PE array, visual wake words
MobileNetV1-0.25 on 8x8 (input tile buffers of ``--buffer-bytes``, default 4 KiB as
``cnnforge run``'s):

1. **golden model vs TensorFlow Lite Micro** (``tflite_micro`` reference kernels) on ``--golden``
   random int8 inputs (the KWS sample first): output values that differ (expected 0) and the
   golden model's time per inference;
2. **RTL**: ``cnnforge run MODEL --inputs X --json ...`` on ``--inputs`` inputs (the KWS sample
   among them, random int8 for the other two models): RTL/golden mismatches on the outputs and
   on every layer map (expected 0), the outputs against TensorFlow Lite Micro, the classes,
   MACs, cycles per inference, ideal cycles (MACs / PEs), PE utilization (multiplier use)
   overall and per layer type (conv, depthwise, pointwise, FC, average pool, add), the
   MAC-equivalent throughput (above 100 % where Winograd multiplies less) and the simulator's
   cycles per second.

Results go to ``benchmarks/results/mlperf_tiny.json`` and a Markdown table to stdout (the README's
"Real models" table); builds under ``build/bench/mlperf/<model>``.

Run (three Verilator builds and about 1.5 M simulated cycles per input: 15 minutes on a 2-core
machine; ``--no-rtl`` for the golden comparison alone, seconds)::

    .venv/bin/python benchmarks/mlperf_tiny.py
    .venv/bin/python benchmarks/mlperf_tiny.py --no-rtl
    .venv/bin/python benchmarks/mlperf_tiny.py --models vww_96_int8 --device lfe5u-85f \
        --inputs 1 --json benchmarks/results/mlperf_tiny_85f.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.tools.cli import main as cnnforge
from cnnforge.sim.golden import run_quantized

import common
from common import tflm

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "mlperf_tiny"
RUNS = [  # name, file, array
    ("KWS DS-CNN", "kws_ref_model.tflite", 4),
    ("ResNet-8", "pretrainedResnet_quant.tflite", 4),
    ("VWW MobileNetV1-0.25", "vww_96_int8.tflite", 8),
]
TYPES = ("conv", "depthwise", "pointwise", "fc", "avgpool", "add")


def inputs(qnet, file, count, seed=14):
    """``count`` int8 inputs in the model's layout: the KWS sample first, then random."""
    rng = np.random.default_rng(seed)
    xs = rng.integers(-128, 128, (count,) + qnet.model_input_shape).astype(np.int8)
    if file.startswith("kws"):
        xs[0] = np.load(MODELS / "kws_sample_int8.npy")[0]
    return xs


def golden_check(path, count):
    network = load_network(path)
    qnet = network.quantized
    xs = inputs(qnet, path.name, count)
    t0 = time.perf_counter()
    result = run_quantized(qnet, qnet.model_input(xs))
    ours = qnet.model_output(result[-1])
    seconds = (time.perf_counter() - t0) / count
    ref = tflm(path, xs)
    return {"inputs": count, "values_differing": int((ours != ref).sum()),
            "values": int(ref.size), "golden_ms_per_inference": seconds * 1e3,
            "macs": int(qnet.macs())}


def rtl_run(path, array, count, buffer_bytes, out, lanes=None, device=None):
    """``cnnforge run`` of the model on ``array`` × ``array`` (``device``: the design ``cnnforge
    synth`` builds for it, direct convolution), ``lanes`` loader lanes (default: 1, or the
    device's)."""
    network = load_network(path)
    xs = inputs(network.quantized, path.name, count)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "inputs.npy", xs)
    design = (["--device", device, "--algorithm", "direct"] if device
              else ["--rows", str(array), "--cols", str(array)])
    design += ["--loader-lanes", str(lanes)] if lanes else []
    status = cnnforge(["run", str(path), "--inputs", str(out / "inputs.npy"), *design,
                       "--buffer-bytes", str(buffer_bytes),
                       "--build-dir", str(out), "--json", str(out / "report.json"),
                       "--outputs", str(out / "outputs.npy")])
    report = json.loads((out / "report.json").read_text())
    outputs = np.load(out / "outputs.npy")
    return {
        "status": status, "array": report.get("array", [array, array]), "device": device,
        "loader_lanes": report["plan"]["loader_lanes"], "inputs": count,
        "rtl_golden_mismatches": report["rtl_golden_mismatches"],
        "layer_map_mismatches": sum(report["layer_mismatches"].values()),
        "outputs_equal_tflm": bool(np.array_equal(outputs, tflm(path, xs))),
        "classes": report["rtl_classes"],
        "macs": report["macs"], "cycles": report["cycles_per_image"],
        "ideal_cycles": report["ideal_cycles_per_image"],
        "pe_utilization": report["pe_utilization"],
        "mac_throughput": report["mac_throughput"],
        "by_type": {k: report["by_type"][k]["pe_utilization"] for k in TYPES
                    if k in report["by_type"]},
        "simulated_cycles_per_second": report["simulated_cycles_per_second"],
    }


def table(results):
    head = ("| model | array | MACs | cycles / inference | ideal | PE util. | MAC-equiv. | "
            + " | ".join(TYPES) + " | sim. cycles/s | RTL = golden = TFLM |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, res in results.items():
        r = res.get("rtl")
        if r is None:
            continue
        util = " | ".join("-" if r["by_type"].get(k) is None else f"{r['by_type'][k]:.1%}"
                          for k in TYPES)
        ok = (r["rtl_golden_mismatches"] == 0 and r["layer_map_mismatches"] == 0
              and r["outputs_equal_tflm"])
        rows.append(f"| {name} | {r['array'][0]}x{r['array'][1]} | {r['macs']:,} | "
                    f"{r['cycles']:,.0f} | {r['ideal_cycles']:,} | {r['pe_utilization']:.1%} | "
                    f"{r['mac_throughput']:.1%} | "
                    f"{util} | {r['simulated_cycles_per_second']:,.0f} | "
                    f"{'yes' if ok else 'NO'} ({r['inputs']} inputs) |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--golden", type=int, default=51, help="inputs of the golden comparison")
    p.add_argument("--inputs", type=int, default=3, help="inputs of each RTL run")
    p.add_argument("--buffer-bytes", type=int, default=4096)
    p.add_argument("--no-rtl", action="store_true", help="the golden comparison only")
    p.add_argument("--loader-lanes", type=int, choices=(1, 2),
                   help="values the tile loader moves per cycle (default 1, or the --device's)")
    p.add_argument("--device", help="run the design `cnnforge synth --device` builds (its "
                   "array, tile buffers, loader lanes; direct convolution) instead of R x R")
    p.add_argument("--models", nargs="+", choices=[f.split(".")[0] for _, f, _ in RUNS],
                   help="only these models (default all)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "mlperf_tiny.json"))
    args = p.parse_args()
    results = {}
    for name, file, array in RUNS:
        if args.models and file.split(".")[0] not in args.models:
            continue
        path = MODELS / file
        results[name] = {"file": file, "golden": golden_check(path, args.golden)}
        g = results[name]["golden"]
        print(f"{name}: golden vs TFLite Micro on {g['inputs']} inputs: "
              f"{g['values_differing']} of {g['values']} values differ; "
              f"{g['golden_ms_per_inference']:.1f} ms per inference")
        if not args.no_rtl:
            build = "-".join([path.stem] + ([args.device] if args.device else [])
                             + ([f"lanes{args.loader_lanes}"] if args.loader_lanes else []))
            results[name]["rtl"] = rtl_run(path, array, args.inputs, args.buffer_bytes,
                                           ROOT / "build" / "bench" / "mlperf" / build,
                                           args.loader_lanes, args.device)
    out = {"machine": common.machine_info("cnnforge", "verilator", "tflite-micro"),
           "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(table(results))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
