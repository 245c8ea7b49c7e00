"""PE utilization, cycle breakdown and simulator speed of cnnforge accelerators, measured in RTL.

Every number here comes from the real generated Verilog simulated by Verilator through cocotb
(:class:`cnnforge.sim.accel.AcceleratorSim`), run with ``debug=True`` so that the accelerator
itself reports the cycle count of every layer (its ``layer_cycles`` counter, from the layer's
start pulse to the last write-back), and every run is checked bit for bit against the NumPy
golden model (:func:`cnnforge.sim.accel.compare`; any mismatch aborts the benchmark).

What it measures, for each PE array size (default 4x4 and 8x8):

1. **Digits network** (``examples/digits/net.py``, 100 held-out images): per layer, measured
   cycles against the ideal ``ceil(MACs / (R*C))`` and the PE utilization ``ideal / measured``.
2. **Larger convolutions**, each a one-layer Conv2d+ReLU network with random weights (He
   init), random bias and random calibration data: 16->32 and 16->16 channels 3x3 pad 1 on
   16x16, 32->32 3x3 pad 1 on 8x8, 1x1 32->32 on 16x16 and 3x3 stride 2 pad 1 16->32 on 16x16.
   The planner's default tiling (``compile_network``) and ``input_buffer_bytes=4096`` are used;
   if a layer does not fit, the budget is doubled until it does and the table says so.
   Everything is compiled with ``algorithm="direct"`` (im2col GEMM on the PE array) by
   default: the compiler's ``"auto"`` runs 3x3 stride-1 layers as Winograd F(2x2, 3x3) when
   faster, which does fewer multiplications than the MAC count, so ideal/cycles is no longer a
   PE utilization. ``--algorithm direct auto`` adds those runs, marked as effective figures.
3. **Where the cycles go**, per layer, from the compiled ``LayerPlan.values`` (K = N*kh*kw
   reduction beats per pass, L = max(K, R*C+1) beats per pass, Tr_in x Tc_in input tiles):

   * ``ideal``      ceil(MACs / (R*C)): every PE busy every cycle;
   * ``edge``       passes*K - ideal: real beats in which some PEs have no work (the last
                    output-channel block has fewer than R channels, the last column group of a
                    tile fewer than C pixels; a Linear layer uses 1 column of C);
   * ``bubbles``    passes*(L-K): idle beats padding a pass to the R*C+1 beats the drain needs;
   * ``first load`` N*Tr_in*Tc_in: loading the first input tile, which nothing overlaps;
   * ``load stall`` cycles the array waits between tiles because a tile's load (started when
                    its half of the ping-pong buffer was freed) is slower than the compute of
                    the tile before it (an event model of the double-buffered loader/feeder);
   * ``rest``       measured - all of the above, split into
                    ``fill/drain`` = array latency R+C-1 + draining the last pass's R*C results
                    (one per cycle) + the part of the post-processor latency
                    (``PostProcessor.latency``) not hidden under that drain (none when the last
                    drained result is padding, e.g. a Linear layer) - (L-K) (the last pass's
                    own bubbles overlap its drain, but ``bubbles`` counts them),
                    and ``handshakes`` = rest - fill/drain: the registered start/finish
                    handshakes of the layer (start pulse, loader start, tile-buffer write
                    stage, controller start, beat register, final busy check: a constant)
                    plus about one cycle per tile switch (shown with the number of tiles).

   So ``measured = ideal + edge + bubbles + first load + load stall + rest`` exactly. When
   ``cnnforge.hw.models.perf`` (the project's analytic cycle model) is importable, its prediction is
   shown next to the measurement as a cross-check. Only output-reuse (OR, the default
   dataflow) layers get a breakdown; IR/WR layers show measured and ideal only.
4. **Simulator speed** on the digits network with debug on (100 images): simulated clock
   cycles per wall second (``RTLResult.cycles_per_second``: image streaming, debug dumps and
   logits included) and wall time per image. Both depend on the machine's load, so the load
   average at the start of each run is recorded next to them.
5. **``make demo`` wall time**, by running ``make -C <repo> demo`` once (``--skip-demo`` skips
   it). It includes whatever make has to redo (the package install when pyproject.toml
   changed, the Verilator build of ``build/digits`` when the design changed); the JSON says
   which.

Run it (a few minutes once the simulators are built: 12 Verilator builds of 1-4 minutes each
the first time, cached under ``--build-dir``)::

    make benchmarks                       # = .venv/bin/python benchmarks/utilization.py
    .venv/bin/python benchmarks/utilization.py --rows 4 8 --cols 4 8 \\
        --json benchmarks/results/utilization.json
    .venv/bin/python benchmarks/utilization.py --rows 8 --cols 8 --skip-demo --no-shapes

``--rows``/``--cols`` take lists paired element by element (a single value is repeated): the
default ``--rows 4 8 --cols 4 8`` reports a 4x4 and an 8x8 array.
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

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "net.py"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "utilization.json"
DEFAULT_BUILD = ROOT / "benchmarks" / "build"
DEFAULT_BUFFER = 4096

# name, (in channels, out channels, H=W, kernel, stride, padding)
SHAPES = [
    ("conv16-32_16x16_3x3", (16, 32, 16, 3, 1, 1)),
    ("conv16-16_16x16_3x3", (16, 16, 16, 3, 1, 1)),
    ("conv32-32_8x8_3x3", (32, 32, 8, 3, 1, 1)),
    ("conv32-32_16x16_1x1", (32, 32, 16, 1, 1, 0)),
    ("conv16-32_16x16_3x3_s2", (16, 32, 16, 3, 2, 1)),
]


# ---- model of the cycles of one layer -------------------------------------------------------

def cycle_model(layer, cfg):
    """Split a layer's cycles into the parts the architecture explains (see the docstring).

    Parameters
    ----------
    layer : LayerPlan
    cfg : AcceleratorConfig

    Returns
    -------
    dict of int: passes, tiles, K, L, load (cycles per tile load), ideal, compute, edge,
    bubbles, first_load, load_stall, fill_drain, ppu_tail.
    """
    v = layer.values
    R, C = cfg.rows, cfg.cols
    K, L = v["K"], v["L"]
    load = v["N"] * v["Tr_in"] * v["Tc_in"]        # the loader writes one value per cycle
    from cnnforge.hw.models.perf import or_pass_beats, or_passes, tile_order
    tiles, beats = [], []        # passes and their beats per tile, in loader/feeder order
    for tile in tile_order(v):
        order = or_passes(v, cfg, tile, range(v["MB"]))
        tiles.append(len(order))
        beats.append(sum(or_pass_beats(K, cfg, cols) for *_, cols in order))
    passes = sum(tiles)
    assert passes == layer.passes, (passes, layer.passes)
    # double buffering: tile i loads into half i%2 once tile i-2 (same half) is computed and
    # the loader has finished tile i-1; the feeder starts tile i when it is loaded and tile i-1
    # is computed
    load_end, feed_end, stall = [], [], 0
    for i in range(len(tiles)):
        start = 0 if i == 0 else max(load_end[i - 1], feed_end[i - 2] if i >= 2 else 0)
        load_end.append(start + load)
        begin = load_end[i] if i == 0 else max(load_end[i], feed_end[i - 1])
        if i:
            stall += begin - feed_end[i - 1]
        feed_end.append(begin + beats[i])
    ideal = math.ceil(layer.macs / cfg.pes)
    compute = passes * K
    # the last pass (last tile, last channel block, last row, last column group): index of the
    # last result the drainer hands to the post-processor as valid (row-major over R x C)
    m0 = (v["MB"] - 1) * R
    x0 = (v["ntc"] - 1) * v["Tc"] + (v["groups_last"] - 1) * C
    oy = v["OH"] - 1
    last_valid = -1
    if oy < v["oy_lim"]:
        for r in range(R):
            for c in range(C):
                if m0 + r < v["M"] and x0 + c < min(v["OW"], v["ox_lim"]):
                    last_valid = r * C + c
    from cnnforge.hw.rtl.ppu import PostProcessor

    ppu_tail = max(0, last_valid + PostProcessor.latency - (R * C - 1)) if last_valid >= 0 else 0
    return {
        "passes": passes, "tiles": len(tiles), "K": K, "L": L, "tile_load": load,
        "ideal": ideal, "compute": compute, "edge": compute - ideal,
        "bubbles": sum(beats) - compute, "first_load": load, "load_stall": stall,
        "fill_drain": (R + C - 1) + R * C + ppu_tail - (L - K), "ppu_tail": ppu_tail,
    }


def perf_prediction(layer, cfg):
    """Cycles predicted by the project's analytic model (cnnforge.hw.models.perf), if it exists."""
    try:
        from cnnforge.hw.models.perf import layer_cycles
    except ImportError:
        return None
    try:
        return int(layer_cycles(layer.values, cfg))
    except Exception:  # a model from another version of the compiler: not worth failing on
        return None


# ---- networks ---------------------------------------------------------------------------

def random_conv_network(cin, cout, hw, k, stride, pad, seed, calib_images=64):
    """A Conv2d+ReLU network with random He-initialised weights, random bias and random
    calibration inputs (standard normal)."""
    from cnnforge.hw.frontend.network import Conv2d, ReLU, Sequential

    rng = np.random.default_rng(seed)
    net = Sequential(Conv2d(cin, cout, k, stride=stride, padding=pad), ReLU(),
                     input_shape=(cin, hw, hw))
    fan_in = cin * k * k
    net.load_state_dict({
        "0.weight": rng.normal(0, math.sqrt(2 / fan_in), (cout, cin, k, k)).astype(np.float32),
        "0.bias": rng.normal(0, 0.1, cout).astype(np.float32),
    })
    net.calibration = rng.standard_normal((calib_images, cin, hw, hw)).astype(np.float32)
    return net, rng


def compile_fitting(qnet, rows, cols, budget, algorithm):
    """compile_network with the default planner; doubles input_buffer_bytes until every layer
    fits. Returns (program, budget used, note or None)."""
    from cnnforge.hw.compiler.program import AcceleratorConfig, ConfigError, compile_network

    first = budget
    while True:
        try:
            cfg = AcceleratorConfig(rows=rows, cols=cols, input_buffer_bytes=budget,
                                    algorithm=algorithm)
            program = compile_network(qnet, cfg)
        except ConfigError as exc:
            if budget >= 1 << 24:
                raise
            last_error = str(exc)
            budget *= 2
            continue
        note = None if budget == first else (
            f"input_buffer_bytes raised from {first} to {budget} ({last_error})")
        return program, budget, note


def signature(program):
    """What makes two compiled programs the same hardware run (same network)."""
    return tuple((layer.name, tuple(sorted(layer.values.items()))) for layer in program.layers)


# ---- one measured run -------------------------------------------------------------------

def measure(program, images, build_dir, label, console):
    """Build and run ``program`` on Verilator with debug on, check against the golden model,
    and return the per-layer numbers."""
    from cnnforge.sim.accel import AcceleratorSim, compare

    cfg = program.config
    t0 = time.perf_counter()
    with console.status(f"[{label}] generating Verilog and building the simulator"):
        sim = AcceleratorSim(program, build_dir).build()
    build_s = time.perf_counter() - t0
    load = os.getloadavg()[0]
    with console.status(f"[{label}] RTL simulation of {len(images)} images"):
        t1 = time.perf_counter()
        result = sim.run(images, debug=True, name="bench")
        run_s = time.perf_counter() - t1
    _, mismatches = compare(program, images, result)
    bad = mismatches["logits"] + sum(mismatches["layers"].values())
    if bad:
        raise SystemExit(f"{label}: RTL and golden model disagree: {mismatches}")
    counters = [[c if isinstance(c, dict) else {"cycles": int(c)} for c, _ in per_image]
                for per_image in result.layers]
    layers = []
    for i, layer in enumerate(program.layers):
        v = layer.values
        cyc = np.array([per_image[i]["cycles"] for per_image in counters], np.int64)
        measured = float(cyc.mean())
        ideal = math.ceil(layer.macs / cfg.pes)
        entry = {
            "name": layer.name, "type": layer.type, "macs": int(layer.macs),
            "dataflow": getattr(layer, "dataflow", "or"),
            "algorithm": getattr(layer, "algorithm", "direct"),
            "shape": {k: int(v[k]) for k in ("N", "H", "W", "M", "OH", "OW", "kh", "kw", "sh",
                                             "sw")},
            "tiling": {k: int(v[k]) for k in ("Tr", "Tc", "Tr_in", "Tc_in", "ntr", "ntc", "MB",
                                              "K", "L")},
            "cycles": measured, "cycles_min": int(cyc.min()), "cycles_max": int(cyc.max()),
            "ideal_cycles": ideal,
            "pe_utilization": ideal / measured,
            "perf_model_cycles": perf_prediction(layer, cfg),
            "counters": {k: float(np.mean([per_image[i][k] for per_image in counters]))
                         for k in counters[0][i]},
            "breakdown": None,
        }
        if v.get("df", Dataflow.OR) == Dataflow.OR:   # the breakdown models the OR flow
            model = cycle_model(layer, cfg)
            explained = (model["ideal"] + model["edge"] + model["bubbles"] + model["first_load"]
                         + model["load_stall"])
            rest = measured - explained
            entry["breakdown"] = {
                "ideal": model["ideal"], "edge": model["edge"], "compute": model["compute"],
                "bubbles": model["bubbles"], "first_load": model["first_load"],
                "load_stall": model["load_stall"], "rest": rest,
                "rest_parts": {"fill_drain": model["fill_drain"],
                               "ppu_tail": model["ppu_tail"],
                               "handshakes": rest - model["fill_drain"]},
            }
            entry.update(passes=model["passes"], tiles=model["tiles"],
                         tile_load=model["tile_load"])
        else:
            entry.update(passes=None, tiles=int(v["ntr"] * v["ntc"]), tile_load=None)
        layers.append(entry)
    total = float(result.cycles.mean())
    ideal = program.ideal_cycles
    try:
        from cnnforge.hw.models.perf import network_model
        perf_image = int(network_model(program)[1])
    except Exception:  # no model, or one from another version of the compiler
        perf_image = None
    return {
        "array": [cfg.rows, cfg.cols],
        "input_buffer_bytes": cfg.input_buffer_bytes,
        "images": int(len(images)),
        "mismatches": mismatches,
        "cycles_per_image": total,
        "ideal_cycles_per_image": int(ideal),
        "pe_utilization": ideal / total,
        "perf_model_image_cycles": perf_image,
        "layers": layers,
        "sim": {
            "sim_cycles": int(result.sim_cycles),
            "wall_seconds": float(result.wall_seconds),
            "cycles_per_second": float(result.cycles_per_second),
            "wall_seconds_per_image": float(result.wall_seconds) / len(images),
            "build_seconds": build_s,
            "run_seconds_incl_startup": run_s,
            "load_average_at_start": load,
        },
    }


def _mtime(path):
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def run_make_demo(console):
    """Time ``make -C ROOT demo`` once, noting what it had to redo: the virtualenv's package
    install (when pyproject.toml is newer than its stamp) and the Verilator build of
    build/digits (when the design changed)."""
    binary = ROOT / "build" / "digits" / "sim_build" / "accelerator"
    before = _mtime(binary)
    cmd = ["make", "-C", str(ROOT), "demo"]
    console.print(f"running {' '.join(cmd)} ...")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = _mtime(binary)
    return {"command": " ".join(cmd), "wall_seconds": wall, "returncode": proc.returncode,
            "reinstalled_package": "pip install" in proc.stdout,
            "verilator_rebuilt": before is None or after != before,
            "load_average_at_start": load,
            "stdout_tail": proc.stdout[-3000:], "stderr_tail": proc.stderr[-1500:]}


# ---- printing -----------------------------------------------------------------------------

def pct(x):
    return f"{x:.1%}"


def print_tables(console, report):
    from rich.table import Table

    util = Table(title="PE utilization per layer (cycles measured by the RTL's per-layer "
                       "counter; ideal = ceil(MACs / PEs); util. = ideal / cycles)")
    for col, right in (("array", False), ("network", False), ("layer", False), ("type", False),
                       ("algo/df", False), ("MACs", True), ("Tr x Tc", True), ("tiles", True),
                       ("passes", True), ("K", True), ("L", True), ("cycles", True),
                       ("ideal", True), ("util.", True), ("perf model", True)):
        util.add_column(col, justify="right" if right else "left")
    brk = Table(title="Where the cycles go: measured = ideal + edge + bubbles + first load + "
                      "load stall + rest (rest = fill/drain + handshakes)")
    for col in ("array", "network", "layer", "cycles", "ideal", "edge", "bubbles", "first load",
                "load stall", "rest", "fill/drain", "handshakes", "tiles"):
        brk.add_column(col, justify="left" if col in ("array", "network", "layer") else "right")

    def part(n, total):
        return f"{n:,.0f} ({n / total:.0%})"

    def opt(x):
        return "-" if x is None else f"{x:,}"

    effective = False
    for cfg in report["configs"]:
        arr = f"{cfg['array'][0]}x{cfg['array'][1]}"
        for entry in cfg["runs"]:
            net, algorithm = entry["network"], entry["algorithm"]
            tag = net if algorithm == "direct" else f"{net} ({algorithm})"
            if "run" not in entry:
                continue
            run = entry["run"]
            if run["input_buffer_bytes"] != DEFAULT_BUFFER:
                tag += f" [buf {run['input_buffer_bytes']}]"
            for layer in run["layers"]:
                t, b, m = layer["tiling"], layer["breakdown"], layer["cycles"]
                spread = "" if layer["cycles_min"] == layer["cycles_max"] else \
                    f" [{layer['cycles_min']}..{layer['cycles_max']}]"
                wino = layer["algorithm"] != "direct"
                effective |= wino
                util.add_row(arr, tag, layer["name"], layer["type"],
                             f"{layer['algorithm']}/{layer['dataflow']}",
                             f"{layer['macs']:,}", f"{t['Tr']}x{t['Tc']}", str(layer["tiles"]),
                             opt(layer["passes"]), str(t["K"]), str(t["L"]),
                             f"{m:,.0f}{spread}", f"{layer['ideal_cycles']:,}",
                             pct(layer["pe_utilization"]) + ("*" if wino else ""),
                             opt(layer["perf_model_cycles"]))
                if b is None:
                    brk.add_row(arr, tag, layer["name"], f"{m:,.0f}",
                                part(layer["ideal_cycles"], m), *["-"] * 7, str(layer["tiles"]))
                    continue
                brk.add_row(arr, tag, layer["name"], f"{m:,.0f}", part(b["ideal"], m),
                            part(b["edge"], m), part(b["bubbles"], m), part(b["first_load"], m),
                            part(b["load_stall"], m), part(b["rest"], m),
                            str(b["rest_parts"]["fill_drain"]),
                            f"{b['rest_parts']['handshakes']:g}", str(layer["tiles"]))
            if len(run["layers"]) > 1:
                layer_sum = sum(x["cycles"] for x in run["layers"])
                util.add_row(arr, tag, "[b]all layers[/]", "", "", "", "", "", "", "", "",
                             f"{layer_sum:,.0f}", f"{run['ideal_cycles_per_image']:,}",
                             pct(run["ideal_cycles_per_image"] / layer_sum), "")
                util.add_row(arr, tag, "[b]image[/] (engine counter)", "", "", "", "", "", "",
                             "", "", f"{run['cycles_per_image']:,.0f}",
                             f"{run['ideal_cycles_per_image']:,}", pct(run["pe_utilization"]),
                             opt(run.get("perf_model_image_cycles")), end_section=True)
        util.add_section()
        brk.add_section()
    console.print(util)
    if effective:
        console.print("* Winograd layer: fewer multiplications than the direct MACs, so "
                      "ideal/cycles (effective utilization) can exceed 100%")
    console.print(brk)

    speed = Table(title="Simulator speed (Verilator + cocotb, debug on)")
    for col in ("array", "design", "images", "sim cycles", "wall s", "cycles/s", "s/image",
                "build s", "load avg"):
        speed.add_column(col, justify="left" if col in ("array", "design") else "right")
    for cfg in report["configs"]:
        arr = f"{cfg['array'][0]}x{cfg['array'][1]}"
        for entry in cfg["runs"]:
            if "run" not in entry:
                continue
            run, s = entry["run"], entry["run"]["sim"]
            tag = entry["network"] if entry["algorithm"] == "direct" else \
                f"{entry['network']} ({entry['algorithm']})"
            speed.add_row(arr, tag, str(run["images"]), f"{s['sim_cycles']:,}",
                          f"{s['wall_seconds']:.2f}", f"{s['cycles_per_second']:,.0f}",
                          f"{s['wall_seconds_per_image']:.3f}", f"{s['build_seconds']:.1f}",
                          f"{s['load_average_at_start']:.1f}")
        speed.add_section()
    console.print(speed)
    for cfg in report["configs"]:
        for entry in cfg["runs"]:
            if "same_as" in entry:
                console.print(f"{cfg['array'][0]}x{cfg['array'][1]} {entry['network']} with "
                              f"algorithm={entry['algorithm']} compiles to the same program as "
                              f"{entry['same_as']}: not run again")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    demo = report.get("make_demo")
    if demo:
        status = "ok" if demo["returncode"] == 0 else f"[red]exit {demo['returncode']}[/]"
        redo = [what for what, flag in (("package reinstall", demo["reinstalled_package"]),
                                        ("Verilator rebuild", demo["verilator_rebuilt"]))
                if flag]
        redone = (" + ".join(redo) + " included") if redo else \
            "install and Verilator build were cached"
        console.print(f"make demo wall time     {demo['wall_seconds']:.1f} s ({status}; {redone}"
                      f"; load average {demo['load_average_at_start']:.1f} on "
                      f"{os.cpu_count()} CPUs)")
    console.print(f"benchmark wall time     {report['wall_seconds']:.0f} s")


# ---- main ---------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[4, 8],
                   help="PE array rows, one per configuration (default: 4 8)")
    p.add_argument("--cols", type=int, nargs="+", default=[4, 8],
                   help="PE array columns, paired with --rows (default: 4 8)")
    p.add_argument("--images", type=int, default=100,
                   help="digits test images per configuration (default 100)")
    p.add_argument("--shape-images", type=int, default=3,
                   help="random images per larger conv shape (default 3)")
    p.add_argument("--algorithm", nargs="+", default=["direct"],
                   choices=["direct", "auto", "winograd"],
                   help="convolution algorithm(s) to compile with (AcceleratorConfig.algorithm; "
                        "default: direct, the im2col GEMM whose PE utilization is modelled; "
                        "'auto' adds the compiler's own choice, Winograd F(2x2,3x3) where it is "
                        "faster; a program identical to one already run is not run again)")
    p.add_argument("--no-shapes", action="store_true", help="skip the larger conv shapes")
    p.add_argument("--skip-demo", action="store_true", help="do not time `make demo`")
    p.add_argument("--json", default=str(DEFAULT_JSON),
                   help="write all numbers to this JSON file (default "
                        f"{DEFAULT_JSON.relative_to(ROOT)}; '' to skip)")
    p.add_argument("--build-dir", default=str(DEFAULT_BUILD),
                   help=f"simulator builds (default {DEFAULT_BUILD.relative_to(ROOT)})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random networks and images")
    args = p.parse_args(argv)
    rows, cols = args.rows, args.cols
    if len(rows) == 1 and len(cols) > 1:
        rows = rows * len(cols)
    if len(cols) == 1 and len(rows) > 1:
        cols = cols * len(rows)
    if len(rows) != len(cols):
        p.error(f"--rows has {len(rows)} values and --cols {len(cols)}: give the same number "
                "(or one)")
    args.arrays = list(zip(rows, cols))
    return args


def main(argv=None):
    from rich.console import Console

    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize

    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    build_root = Path(args.build_dir).resolve()
    notes = []

    digits = load_network(DIGITS)
    digits_q = quantize(digits)
    x, _ = digits.test_data()
    digits_images = digits_q.quantize_input(x[:args.images])

    shape_nets = []
    if not args.no_shapes:
        for i, (name, (cin, cout, hw, k, s, pad)) in enumerate(SHAPES):
            net, rng = random_conv_network(cin, cout, hw, k, s, pad, seed=args.seed + i)
            qnet = quantize(net)
            imgs = qnet.quantize_input(rng.standard_normal(
                (args.shape_images, cin, hw, hw)).astype(np.float32))
            spec = {"in_channels": cin, "out_channels": cout, "H": hw, "W": hw, "kernel": k,
                    "stride": s, "padding": pad, "relu": True}
            shape_nets.append((name, spec, qnet, imgs))

    nets = [("digits", None, digits_q, digits_images)] + shape_nets
    configs = []
    for rows, cols in args.arrays:
        arr = f"{rows}x{cols}"
        console.rule(f"{arr} PE array")
        runs, seen = [], {}
        for algorithm in args.algorithm:
            for name, spec, qnet, imgs in nets:
                program, budget, note = compile_fitting(qnet, rows, cols, DEFAULT_BUFFER,
                                                        algorithm)
                entry = {"network": name, "algorithm": algorithm, "spec": spec,
                         "budget_raised": note}
                key = (name, signature(program))
                if key in seen:
                    entry["same_as"] = seen[key]
                    runs.append(entry)
                    continue
                seen[key] = algorithm
                if note:
                    notes.append(f"{arr} {name}: {note}")
                tag = name if algorithm == "direct" else f"{name} ({algorithm})"
                suffix = "" if algorithm == "direct" else f"_{algorithm}"
                run = measure(program, imgs, build_root / f"{name}_{arr}{suffix}",
                              f"{arr} {tag}", console)
                entry["run"] = run
                runs.append(entry)
                algos = "/".join(sorted({x["algorithm"] for x in run["layers"]}))
                console.print(f"{arr} {tag}: {run['cycles_per_image']:.0f} engine cycles/image "
                              f"({algos}), ideal {run['ideal_cycles_per_image']}, utilization "
                              f"{pct(run['pe_utilization'])}, "
                              f"{run['sim']['cycles_per_second']:,.0f} simulated cycles/s, "
                              "0 mismatches")
        configs.append({"array": [rows, cols], "runs": runs})

    summary = {}
    for cfg in configs:
        arr = f"{cfg['array'][0]}x{cfg['array'][1]}"
        measured = {(r["network"], r["algorithm"]): r["run"] for r in cfg["runs"] if "run" in r}
        item = {}
        digits_run = measured.get(("digits", "direct"))
        if digits_run:
            item["digits_layer_utilization"] = {x["name"]: x["pe_utilization"]
                                                for x in digits_run["layers"]}
            item["digits_image_utilization"] = digits_run["pe_utilization"]
            item["digits_cycles_per_image"] = digits_run["cycles_per_image"]
            item["sim_cycles_per_second"] = digits_run["sim"]["cycles_per_second"]
            item["sim_wall_seconds_per_image"] = digits_run["sim"]["wall_seconds_per_image"]
        for (name, algorithm), run in measured.items():
            if name != "digits":
                item[f"{name}:{algorithm}:utilization"] = run["layers"][0]["pe_utilization"]
                item[f"{name}:{algorithm}:cycles"] = run["layers"][0]["cycles"]
        summary[arr] = item

    report = {
        "description": "PE utilization (ideal ceil(MACs/(R*C)) / measured cycles), cycle "
                       "breakdown and simulator speed, measured in Verilator RTL simulation "
                       "with per-layer hardware cycle counters; every run matched the golden "
                       "model bit for bit",
        "host": {"python": sys.version.split()[0], "platform": platform.platform(),
                 "cpus": os.cpu_count(), "load_average_at_start": load_start,
                 "load_average_at_end": os.getloadavg()[0]},
        "seed": args.seed,
        "algorithms": args.algorithm,
        "summary": summary,
        "configs": configs,
        "notes": notes,
    }
    if not args.skip_demo:
        report["make_demo"] = run_make_demo(console)
        if report["make_demo"]["returncode"] != 0:
            notes.append("make demo failed: " + report["make_demo"]["stderr_tail"][-500:])
    report["wall_seconds"] = time.perf_counter() - t_start
    print_tables(console, report)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
