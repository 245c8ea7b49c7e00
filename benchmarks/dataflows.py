"""OR vs IR vs WR: measured in RTL (Verilator) and predicted by the analytic model, per layer.

For each dataflow (every layer compiled with the same ``dataflow``, direct convolution, the
planner's tiles for a 4096-byte input tile buffer) and each PE array (default 4x4 and 8x8), one
network runs through the generated Verilog on Verilator
(:class:`cnnforge.sim.accel.AcceleratorSim`, ``debug=True``: the accelerator reports every
layer's counters — cycles and buffer reads/writes — and its output map, checked bit for bit
against the golden model; a mismatch aborts the benchmark). The benchmark layers are chained
into that one network so that a (dataflow, array) pair costs one Verilator build, not one per
layer (a layer's counters do not depend on its neighbours: the engine starts every layer
afresh, and the benchmark checks that each digits layer's plan equals its plan in the digits
network itself):

1. **MobileNet layers** (random He-initialised float weights quantized to int8, random
   calibration inputs): the public MobileNetV1/V2 layer shapes the engine runs, **at a reduced
   spatial size**: the stem 3x3 stride-2 full convolution 3->32 (MobileNetV1/V2's first layer,
   on 224x224 there) on a 16x16 input, and every pointwise (1x1) layer on an 8x8 map instead of
   112x112 ... 14x14 (the full sizes would take hours of RTL simulation): V2 project 32->16,
   V2 expand 16->96, V2 project 96->24, V2 expand 24->144, V2 project 144->32, V1 pointwise
   32->64, 64->128, 128->128, 128->256, 256->256, 256->512, 512->512. ReLU6 after every layer but
   the V2 projections (linear bottlenecks, as in the papers). Depthwise convolutions (OR
   only) are measured by ``benchmarks/mobilenet.py``; in the real networks they sit between
   these layers.
2. a **glue** pointwise layer 512->1 (not reported) that turns the 512 x 8x8 map into the digits
   network's 1 x 8x8 input;
3. the **digits layers** (``examples/digits/net.py``, its trained weights): Conv2d 1->8 3x3 pad 1
   on 8x8 + ReLU + MaxPool2d(2), Conv2d 8->16 3x3 pad 1 on 4x4 + ReLU + MaxPool2d(2), Linear
   64->10.

Per layer it reports measured cycles, the model's cycles, ideal cycles ``ceil(MACs / PEs)``,
utilization ``ideal / measured``, and the buffer accesses (input tile buffer, weight ROM,
output/partial-sum buffer, feature map), and checks model == RTL for every counter (expected:
exact). One image. Results go to ``benchmarks/results/dataflows.json``; builds under
``build/bench/dataflows/`` (an unchanged design is not rebuilt, so a second run only
simulates).

Run (6 Verilator builds, 1-4 minutes each on a 2-core machine, plus about a minute of
simulation per 4x4 run)::

    .venv/bin/python benchmarks/dataflows.py
    .venv/bin/python benchmarks/dataflows.py --arrays 4x4 --dataflows or wr
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

from cnnforge.hw.models.dataflow import Dataflow
from common import compact_count

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "net.py"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "dataflows.json"
DEFAULT_BUILD = ROOT / "build" / "bench" / "dataflows"
DATAFLOWS = ("or", "ir", "wr")
ACCESSES = ("ibuf_reads", "ibuf_writes", "weight_reads", "obuf_reads", "obuf_writes",
            "fm_reads", "fm_writes")

#: (name, in channels, out channels, where it is in the paper, linear bottleneck: no ReLU6)
MOBILENET_POINTWISE = [
    ("v2-project-32-16", 32, 16, "MobileNetV2 block 1 project (112x112)", True),
    ("v2-expand-16-96", 16, 96, "MobileNetV2 block 2 expand (112x112)", False),
    ("v2-project-96-24", 96, 24, "MobileNetV2 block 2 project (56x56)", True),
    ("v2-expand-24-144", 24, 144, "MobileNetV2 block 3 expand (56x56)", False),
    ("v2-project-144-32", 144, 32, "MobileNetV2 block 4 project (28x28)", True),
    ("v1-pw-32-64", 32, 64, "MobileNetV1 pointwise 1 (112x112)", False),
    ("v1-pw-64-128", 64, 128, "MobileNetV1 pointwise 2 (56x56)", False),
    ("v1-pw-128-128", 128, 128, "MobileNetV1 pointwise 3 (56x56)", False),
    ("v1-pw-128-256", 128, 256, "MobileNetV1 pointwise 4 (28x28)", False),
    ("v1-pw-256-256", 256, 256, "MobileNetV1 pointwise 5 (28x28)", False),
    ("v1-pw-256-512", 256, 512, "MobileNetV1 pointwise 6 (14x14)", False),
    ("v1-pw-512-512", 512, 512, "MobileNetV1 pointwise 7-11 (14x14)", False),
]


def bench_network(spatial=8, seed=0, calib_images=16):
    """The chained benchmark network (module docstring): MobileNet layers (random weights),
    the glue layer, the digits layers (trained weights).

    Returns ``(network, labels)``: ``labels[i]`` is ``(name, where, part)`` of the i-th engine
    layer, part ``"mobilenet"``, ``"glue"`` or ``"digits"``."""
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.network import Conv2d, ReLU6, Sequential
    digits = load_network(DIGITS)
    layers = [Conv2d(3, 32, 3, stride=2, padding=1, algorithm="direct"), ReLU6()]
    labels = [("stem-3x3s2-3-32", "MobileNetV1/V2 stem, 3x3 stride 2 full conv (224x224 in)",
               "mobilenet")]
    for name, cin, cout, where, linear in MOBILENET_POINTWISE:
        layers.append(Conv2d(cin, cout, 1, algorithm="direct"))
        if not linear:
            layers.append(ReLU6())
        labels.append((name, where, "mobilenet"))
    layers.append(Conv2d(512, 1, 1, algorithm="direct"))
    labels.append(("glue-512-1", "glue: 512 x 8x8 -> the digits input 1 x 8x8", "glue"))
    first_digits = len(layers)
    for layer in digits.layers:
        if hasattr(layer, "algorithm"):
            layer.algorithm = "direct"
        layers.append(layer)
    labels += [("digits-conv-1-8", "digits conv 1->8 3x3 pad 1, 8x8, +pool", "digits"),
               ("digits-conv-8-16", "digits conv 8->16 3x3 pad 1, 4x4, +pool", "digits"),
               ("digits-fc-64-10", "digits Linear 64->10", "digits")]
    net = Sequential(*layers, input_shape=(3, 2 * spatial, 2 * spatial))
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in net.state_dict_shapes().items():
        index, _, param = key.partition(".")
        index = int(index)
        if index >= first_digits:
            state[key] = getattr(digits.layers[index - first_digits], param)
        elif param == "weight":
            fan_in = int(np.prod(shape[1:]))
            state[key] = (rng.standard_normal(shape) * math.sqrt(2 / fan_in)).astype(np.float32)
        else:
            state[key] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    net.load_state_dict(state)
    net.calibration = rng.standard_normal((calib_images, 3, 2 * spatial,
                                           2 * spatial)).astype(np.float32)
    return net, labels


def digits_plans(rows, cols, buffer_bytes, dataflow):
    """Each layer's plan values in the digits network itself (to check the chained copies)."""
    from cnnforge.hw.compiler.program import AcceleratorConfig, _layers_from_ops, compile_network
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize
    qnet = quantize(load_network(DIGITS))
    direct = {"+".join(o.name for o in grp): "direct" for grp in _layers_from_ops(qnet)}
    program = compile_network(qnet, AcceleratorConfig(rows, cols,
                                                      input_buffer_bytes=buffer_bytes,
                                                      dataflow=dataflow), algorithms=direct)
    return [layer.values for layer in program.layers]


#: Plan values that decide a layer's counters (the rest are addresses and quantization).
GEOMETRY = ("df", "N", "H", "W", "M", "OH", "OW", "kh", "kw", "sh", "sw", "ph", "pw", "pk",
            "Tr", "Tc", "ntr", "ntc", "K", "L", "KB", "MB", "Lmin", "slot_words")


def shape_of(layer):
    v = layer.values
    if layer.gemm.kind == "linear":
        return f"FC {v['N']}->{v['M']}"
    return (f"{v['kh']}x{v['kw']}/s{v['sh']} {v['N']}->{v['M']} {v['H']}x{v['W']}"
            + (" +pool" if v["pk"] > 1 else ""))


def why(layer, cfg):
    """What keeps a layer's dataflow from full utilization (from its plan values)."""
    v, R, C = layer.values, cfg.rows, cfg.cols
    reasons = []
    if v["df"] == Dataflow.OR:
        if v["K"] < v["L"]:
            reasons.append(f"K={v['K']} < R*C+1={v['L']}: {1 - v['K'] / v['L']:.0%} bubbles")
        if v["M"] % R:
            reasons.append(f"M={v['M']} not a multiple of R={R}")
        if v["OW"] < C or (min(v["Tc"], v["OW"]) % C):
            reasons.append(f"rows of {min(v['Tc'], v['OW'])} px on {C} columns")
    elif v["df"] == Dataflow.IR:
        if v["M"] < v["Lmin"]:
            reasons.append(f"M={v['M']} < Lmin={v['Lmin']} beats")
        if v["K"] % R:
            reasons.append(f"K={v['K']} not a multiple of R={R}")
        if v["OW"] < C or (min(v["Tc"], v["OW"]) % C):
            reasons.append(f"rows of {min(v['Tc'], v['OW'])} px on {C} columns")
        reasons.append(f"R+2 preload cycles per {v['KB']} blocks of {v['L']} beats")
    else:
        if v["N"] < R:
            reasons.append(f"N={v['N']} < R={R}: {v['N']}/{R} rows busy")
        elif v["N"] % R:
            reasons.append(f"N={v['N']} not a multiple of R={R}")
        if v["M"] % C:
            reasons.append(f"M={v['M']} not a multiple of C={C}")
        px = min(v["Tr"], v["OH"]) * min(v["Tc"], v["OW"])
        if px < v["Lmin"]:
            reasons.append(f"{px} px per tile < Lmin={v['Lmin']} beats")
        reasons.append(f"preload per block of {px} px")
    return "; ".join(reasons)


def print_tables(report, console):
    """Per array: cycles and utilization per dataflow, then buffer accesses per dataflow."""
    from rich.table import Table

    runs = report["runs"]
    for rows, cols in sorted({tuple(r["array"]) for r in runs}):
        per_df = {r["dataflow"]: r for r in runs if r["array"] == [rows, cols]}
        dfs = [df for df in DATAFLOWS if df in per_df]
        first = per_df[dfs[0]]["layers"]
        cycles = Table(title=f"{rows}x{cols} array: cycles per layer, measured in RTL "
                       "(model = RTL on every counter)")
        for col in ["layer", "shape", "ideal"] + [f"{df.upper()}" for df in dfs] + [
                "best", "best util.", "model=RTL"]:
            cycles.add_column(col, justify="left" if col in ("layer", "shape") else "right")
        access = Table(title=f"{rows}x{cols} array: buffer accesses per layer (input tile "
                       "buffer reads / weight-ROM word reads / output+partial-sum buffer reads "
                       "and writes)")
        access.add_column("layer")
        for df in dfs:
            access.add_column(f"{df.upper()} ibuf / weight / obuf", justify="right")
        for i, entry in enumerate(first):
            if entry["part"] == "glue":
                continue
            e = {df: per_df[df]["layers"][i] for df in dfs}
            best = min(dfs, key=lambda d: (e[d]["cycles"], d))
            cycles.add_row(entry["layer"], entry["shape"], str(entry["ideal_cycles"]),
                           *[str(e[df]["cycles"]) for df in dfs], best.upper(),
                           f"{e[best]['utilization']:.0%}",
                           "yes" if all(x["model_equals_rtl"] for x in e.values()) else "NO")
            access.add_row(entry["layer"], *[
                f"{compact_count(e[df]['measured']['ibuf_reads'])} / "
                f"{compact_count(e[df]['measured']['weight_reads'])} / "
                f"{compact_count(e[df]['measured']['obuf_reads'] + e[df]['measured']['obuf_writes'])}"
                for df in dfs])
        console.print(cycles)
        for part in ("mobilenet", "digits"):
            sums = {df: sum(x["cycles"] for x in per_df[df]["layers"] if x["part"] == part)
                    for df in dfs}
            console.print(f"  {part} layers, total cycles: "
                          + ", ".join(f"{df.upper()} {c}" for df, c in sums.items()))
        console.print(access)
    m = report["model_vs_rtl"]
    console.print(f"model vs RTL: {m['agree_on_every_counter']}/{m['layer_runs']} layer runs "
                  f"agree on every counter (cycles and all buffer accesses); largest cycle "
                  f"error {m['max_cycle_error']:.2%}")


def run(args):
    from rich.console import Console

    from cnnforge.hw.compiler.program import AcceleratorConfig, _layers_from_ops, compile_network
    from cnnforge.hw.models.perf import network_model
    from cnnforge.hw.frontend.quantize import quantize
    from cnnforge.sim.accel import AcceleratorSim, compare

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    t_start = time.perf_counter()
    net, labels = bench_network(args.spatial)
    qnet = quantize(net)
    images = qnet.quantize_input(np.random.default_rng(1).standard_normal(
        (args.images, *net.input_shape)).astype(np.float32))
    direct = {"+".join(o.name for o in grp): "direct" for grp in _layers_from_ops(qnet)}
    arrays = [tuple(int(x) for x in a.lower().split("x")) for a in args.arrays]
    runs, failures = [], []
    for rows, cols in arrays:
        for df in args.dataflows:
            cfg = AcceleratorConfig(rows, cols, input_buffer_bytes=args.buffer_bytes,
                                    dataflow=df)
            program = compile_network(qnet, cfg, algorithms=direct)
            # the chained digits layers are planned exactly as in the digits network
            own = digits_plans(rows, cols, args.buffer_bytes, df)
            chained = [layer.values for layer, lab in zip(program.layers, labels)
                       if lab[2] == "digits"]
            for a, b in zip(own, chained):
                assert {k: a[k] for k in GEOMETRY} == {k: b[k] for k in GEOMETRY}, (a, b)
            build = Path(args.build_dir) / f"{df}-{rows}x{cols}"
            t0 = time.perf_counter()
            with console.status(f"{df.upper()} {rows}x{cols}: Verilator build"):
                sim = AcceleratorSim(program, build).build()
            t_build = time.perf_counter() - t0
            with console.status(f"{df.upper()} {rows}x{cols}: simulating {len(images)} "
                                "image(s)"):
                result = sim.run(images, debug=True)
            _, mismatches = compare(program, images, result)
            if mismatches["logits"] or any(mismatches["layers"].values()):
                raise SystemExit(f"{df} {rows}x{cols}: RTL != golden: {mismatches}")
            models, total = network_model(program)
            layers = []
            for i, (layer, model, (label, where, part)) in enumerate(
                    zip(program.layers, models, labels)):
                measured = result.layers[0][i][0]
                same = all(per_image[i][0] == measured for per_image in result.layers)
                predicted = model.counters()
                agree = measured == predicted
                if not agree:
                    failures.append((df, rows, cols, label, measured, predicted))
                layers.append({
                    "layer": label, "part": part, "where": where, "shape": shape_of(layer),
                    "macs": model.macs, "ideal_cycles": model.ideal_cycles,
                    "cycles": measured["cycles"], "model_cycles": predicted["cycles"],
                    "cycle_error": (predicted["cycles"] - measured["cycles"])
                    / measured["cycles"],
                    "utilization": model.ideal_cycles / measured["cycles"],
                    "measured": measured, "model": predicted, "model_equals_rtl": agree,
                    "same_for_every_image": same,
                    "tiling": {k: int(x) for k, x in layer.tiling.items()},
                    "limits": why(layer, cfg),
                })
            runs.append({"array": [rows, cols], "dataflow": df, "images": int(len(images)),
                         "build_seconds": round(t_build, 1),
                         "sim_seconds": round(result.wall_seconds, 1),
                         "cycles_per_image": int(result.cycles[0]),
                         "model_cycles_per_image": total,
                         "sim_cycles_per_second": round(result.cycles_per_second),
                         "layers": layers})
            console.print(f"{df.upper()} {rows}x{cols}: {int(result.cycles[0])} cycles/image "
                          f"(model {total}), build {t_build:.0f} s, simulation "
                          f"{result.wall_seconds:.0f} s, 0 mismatches")

    summary = []
    for rows, cols in arrays:
        per_df = {r["dataflow"]: r for r in runs if r["array"] == [rows, cols]}
        for i, (label, _, part) in enumerate(labels):
            if part == "glue" or not per_df:
                continue
            entries = {df: per_df[df]["layers"][i] for df in per_df}
            first = next(iter(entries.values()))
            summary.append({"array": [rows, cols], "layer": label, "part": part,
                            "shape": first["shape"],
                            "best": min(entries, key=lambda d: (entries[d]["cycles"], d)),
                            "cycles": {d: e["cycles"] for d, e in entries.items()},
                            "ideal_cycles": first["ideal_cycles"],
                            "accesses": {d: {k: e["measured"][k] for k in ACCESSES}
                                         for d, e in entries.items()},
                            "limits": {d: e["limits"] for d, e in entries.items()}})

    checked = sum(len(r["layers"]) for r in runs)
    agree = checked - len(failures)
    worst = max((abs(e["cycle_error"]) for r in runs for e in r["layers"]), default=0.0)
    for f in failures:
        console.print(f"[red]model != RTL[/]: {f}")
    wall = time.perf_counter() - t_start
    console.print(f"wall time {wall / 60:.1f} min")
    report = {
        "benchmark": "benchmarks/dataflows.py",
        "python": platform.python_version(),
        "input_buffer_bytes": args.buffer_bytes,
        "images": args.images,
        "spatial": {"mobilenet_pointwise": f"{args.spatial}x{args.spatial}",
                    "mobilenet_stem_input": f"{2 * args.spatial}x{2 * args.spatial}",
                    "note": "reduced from MobileNet's 112x112..14x14 so the RTL simulation "
                            "finishes in minutes; depthwise layers: benchmarks/mobilenet.py"},
        "model_vs_rtl": {"layer_runs": checked, "agree_on_every_counter": agree,
                         "max_cycle_error": worst},
        "summary": summary,
        "runs": runs,
        "wall_seconds": round(wall, 1),
    }
    print_tables(report, console)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"results: {out}")
    return 1 if failures else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arrays", nargs="+", default=["4x4", "8x8"], help="PE arrays (RxC)")
    p.add_argument("--dataflows", nargs="+", default=list(DATAFLOWS), choices=DATAFLOWS)
    p.add_argument("--spatial", type=int, default=8,
                   help="map size of the MobileNet pointwise layers (default 8)")
    p.add_argument("--images", type=int, default=1, help="images per run (default 1)")
    p.add_argument("--buffer-bytes", type=int, default=4096,
                   help="input tile buffer budget (default 4096)")
    p.add_argument("--json", default=str(DEFAULT_JSON))
    p.add_argument("--build-dir", default=str(DEFAULT_BUILD))
    p.add_argument("--report-only", action="store_true",
                   help="print the tables of an existing --json file, run nothing")
    args = p.parse_args(argv)
    if args.report_only:
        from rich.console import Console
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        print_tables(json.loads(Path(args.json).read_text()), console)
        return 0
    return run(args)

if __name__ == "__main__":
    sys.exit(main())
