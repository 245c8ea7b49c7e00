"""Simulation speed of the RTL bench: simulated clock cycles per second on Verilator,
with and without the per-layer check (``debug``: every layer's output map streamed out and
compared with the golden model).

Models: the digits network of ``make demo`` (4x4, 100 images), the MobileNet-style digits
network (``examples/mobilenet_digits/model_qdq.onnx``, 4x4) and the MLPerf Tiny models
(``examples/mlperf_tiny/``: KWS DS-CNN and ResNet-8 on 4x4, VWW MobileNetV1-0.25 on 8x8, input
tile buffers of ``--buffer-bytes``, random int8 inputs, the KWS sample first). Every run is
checked against the golden model (0 mismatches expected, on the logits and, with debug, on every
layer map).

Each is run in one simulator process and split over ``--workers`` processes of the same build
(``cnnforge run --workers``; default: the cores). ``cycles/s`` is simulated cycles over the wall
time of the simulation loop (the harness's memories filled and read included; the build and the
simulator's start-up excluded; with several processes, all their cycles over the longest one's
loop), as ``cnnforge run`` reports it; ``cycles/CPU s`` uses the simulators' processor time
instead (per process), what the wall time of one process would be on a quiet machine: the
script records the load average, since other processes on a small machine slow the wall-clock
figure down.

Results go to ``benchmarks/results/sim_speed.json``; builds under ``build/bench/sim_speed/``.

Run (five Verilator builds, a few minutes each on 2 cores the first time)::

    .venv/bin/python benchmarks/sim_speed.py
    .venv/bin/python benchmarks/sim_speed.py --models digits mlperf-kws --repeat 3
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.accel import AcceleratorSim, compare

import common

ROOT = Path(__file__).resolve().parent.parent
MLPERF = ROOT / "examples" / "mlperf_tiny"
MOBILENET = ROOT / "examples" / "mobilenet_digits"


def digits(count, buffer_bytes):
    network = load_network(ROOT / "examples" / "digits" / "net.py")
    qnet = quantize(network)
    x, _ = network.test_data()
    return qnet, AcceleratorConfig(4, 4), qnet.quantize_input(x[:count])


def mobilenet(count, buffer_bytes):
    qnet = quantize(load_network(MOBILENET / "model_qdq.onnx"))
    x = np.load(MOBILENET / "test_images.npy")[:count]
    return qnet, AcceleratorConfig(4, 4), qnet.quantize_input(x)


def mlperf(file, array):
    def load(count, buffer_bytes):
        qnet = quantize(load_network(MLPERF / file))
        rng = np.random.default_rng(18)
        xs = rng.integers(-128, 128, (count,) + qnet.model_input_shape).astype(np.int8)
        if file.startswith("kws"):
            xs[0] = np.load(MLPERF / "kws_sample_int8.npy")[0]
        config = AcceleratorConfig(array, array, input_buffer_bytes=buffer_bytes)
        return qnet, config, qnet.model_input(xs)
    return load


MODELS = {  # name: (loader, default number of images)
    "digits": (digits, 100),
    "mobilenet-digits": (mobilenet, 20),
    "mlperf-kws": (mlperf("kws_ref_model.tflite", 4), 4),
    "mlperf-resnet8": (mlperf("pretrainedResnet_quant.tflite", 4), 2),
    "mlperf-vww": (mlperf("vww_96_int8.tflite", 8), 2),
}


def measure(name, count, buffer_bytes, repeat, build_root, workers):
    """Build the model's simulator and run its images ``repeat`` times with and without the
    per-layer check, in one simulator process and in ``workers``; the fastest run (by
    simulated cycles per second of wall time) of each."""
    loader, default = MODELS[name]
    qnet, config, images = loader(count or default, buffer_bytes)
    program = compile_network(qnet, config)
    t0 = time.perf_counter()
    sim = AcceleratorSim(program, build_root / name).build()
    build_seconds = time.perf_counter() - t0
    out = {"images": len(images), "array": [config.rows, config.cols],
           "layers": len(program.layers), "batch": sim.batch,
           "build_seconds": round(build_seconds, 1), "runs": {}}
    for debug in (True, False):
        for processes in sorted({1, workers}):
            best = None
            for _ in range(repeat):
                load = os.getloadavg()[0]
                result = sim.run(images, debug=debug, workers=processes,
                                 name=("debug" if debug else "plain") + f"-{processes}")
                _, mismatches = compare(program, images, result)
                run = {
                    "processes": result.processes,
                    "sim_cycles": result.sim_cycles,
                    "engine_cycles_per_image": float(result.cycles.mean()),
                    "wall_seconds": round(result.wall_seconds, 4),
                    "cpu_seconds": round(result.cpu_seconds, 4),
                    "cycles_per_second": round(result.cycles_per_second),
                    "cycles_per_cpu_second": round(result.cycles_per_cpu_second),
                    "logit_mismatches": mismatches["logits"],
                    "layer_mismatches": sum(mismatches["layers"].values()),
                    "load_average": round(load, 2),
                }
                if best is None or run["cycles_per_second"] > best["cycles_per_second"]:
                    best = run
            out["runs"][f"{'debug' if debug else 'plain'}-{processes}"] = best
    return out


def table(results):
    t = Table(title="RTL simulation speed (Verilator, cocotb bench with the HDL harness)")
    for col in ("model", "array", "images", "per-layer check", "processes",
                "simulated cycles", "cycles/s", "cycles/CPU s", "mismatches", "load"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, res in results.items():
        for kind, run in res["runs"].items():
            t.add_row(name, "x".join(map(str, res["array"])), str(res["images"]),
                      "yes" if kind.startswith("debug") else "no", str(run["processes"]),
                      f"{run['sim_cycles']:,}", f"{run['cycles_per_second']:,}",
                      f"{run['cycles_per_cpu_second']:,}",
                      f"{run['logit_mismatches']}/{run['layer_mismatches']}",
                      f"{run['load_average']:.1f}")
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--images", type=int, default=0,
                   help="images per model (default: 100 digits, 20 MobileNet, 4 KWS, 2 else)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="simulator processes of the parallel runs (default: the cores)")
    p.add_argument("--buffer-bytes", type=int, default=4096,
                   help="input tile buffer of the MLPerf Tiny models (default 4096)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each, the fastest kept")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "sim_speed.json"))
    args = p.parse_args()
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    machine = common.machine_info("cnnforge", "verilator", "cocotb")
    build_root = ROOT / "build" / "bench" / "sim_speed"
    results = {}
    for name in args.models:
        with console.status(f"{name}: build and simulation"):
            results[name] = measure(name, args.images, args.buffer_bytes, args.repeat,
                                    build_root, args.workers)
        one, most = results[name]["runs"]["debug-1"], results[name]["runs"][
            f"debug-{args.workers}"]
        console.print(f"{name}: with the per-layer check {one['cycles_per_second']:,} cycles/s "
                      f"in one process ({one['cycles_per_cpu_second']:,} per CPU second), "
                      f"{most['cycles_per_second']:,} in {most['processes']}; build "
                      f"{results[name]['build_seconds']:.0f} s")
    out = {"machine": machine, "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    console.print(table(results))
    console.print(f"results: {args.json}")
    bad = [n for n, r in results.items() for run in r["runs"].values()
           if run["logit_mismatches"] or run["layer_mismatches"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
