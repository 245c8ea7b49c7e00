"""Depthwise vs pointwise: MobileNetV1/V2 layer shapes measured in RTL (Verilator) and by the model.

For each PE array (default 4x4 and 8x8) one network runs through the generated Verilog on
Verilator (:class:`cnnforge.sim.accel.AcceleratorSim`, one image, ``debug=True``: the
accelerator reports every layer's counters — cycles and buffer reads/writes — and its output
map, checked bit for bit against the golden model; a mismatch aborts the benchmark). The
MobileNet layers are chained into that one network so that an array costs one Verilator build.
Every layer runs output stationary (``dataflow="or"``, the default; a depthwise layer can run
nothing else), direct convolution.

The network (random He-initialised float weights, random calibration inputs, quantized to int8
with :func:`cnnforge.hw.frontend.quantize.quantize`), **at a reduced spatial size**: every map is 8x8
except the inputs of the stride-2 depthwise layers and of the MobileNetV2 expansion that feeds
one, which are 16x16, and V1's last stage: dw 256 s2 on 14x14 -> 7x7 and pw 256->512 on 7x7
(a 256 x 16x16 map has 65,536 values, one more than the debug dump's 16-bit counter can send).
In the papers these layers run on 112x112 ... 14x14 maps (224x224 input):

1. **MobileNetV1** (Howard et al. 2017, Table 1) on a 3x16x16 input: the stem (3x3 stride 2,
   3->32), then the depthwise (3x3, ReLU6) + pointwise (1x1, ReLU6) pairs dw 32 -> pw 32->64,
   dw 64 s2 -> pw 64->128, dw 128 -> pw 128->128, dw 128 s2 -> pw 128->256, dw 256 ->
   pw 256->256, dw 256 s2 -> pw 256->512 (7x7).
2. **MobileNetV2** (Sandler et al. 2018, Table 2) inverted residual blocks, expansion 6, ReLU6
   after the expansion and the depthwise layer, linear projections: 16->(96)->24 stride 2
   (16x16 -> 8x8), 24->(144)->24 stride 1 with its residual ``Add``, 32->(192)->32 stride 1
   with its residual ``Add``; then the head: global average pool (``AdaptiveAvgPool2d(1)``,
   compiled as an all-ones 8x8 depthwise convolution) and a Linear 32->10.
3. **Glue** layers (reported, but kept out of the per-kind totals), where the reduced sizes do
   not chain: a 1x1 depthwise convolution with padding 4 (8x8 -> 16x16, linear; padding 3,
   8x8 -> 14x14, before dw 256 s2) before each V1 stride-2 depthwise layer; a pointwise
   512->16 (7x7) and a 2x2 depthwise layer with padding 5 (7x7 -> 16x16) from V1's 512x7x7
   output to V2's 16x16x16 block input; a pointwise 24->32 in place of V2's 24->(144)->32
   stride-2 block.

Per layer it reports the kind (depthwise / pointwise / dense / add / avgpool, from
``LayerPlan.algorithm``), the shape, MACs, measured cycles, the analytic model's cycles
(:func:`cnnforge.hw.models.perf.network_model`; every counter is checked, model == RTL expected exact),
ideal cycles ``ceil(MACs / PEs)``, utilization ``ideal / measured``, and what bounds the layer:
the array's busy time (passes x beats per pass) and the tile loader's (one value a cycle into
the input tile buffer); then the totals per kind, for the MobileNet layers, the glue and the
whole network. Results go to ``benchmarks/results/mobilenet.json``; builds under
``build/bench/mobilenet/<R>x<C>`` (an unchanged design is not rebuilt). The input tile buffer
budget starts at ``--buffer-bytes`` and is raised to what the compiler asks for (its
ConfigError names the bytes), the same budget for every layer of an array.

Run (2 Verilator builds, 1-2 minutes each on a shared 2-core machine, plus about a minute of
simulation per array: 5 minutes in all, 2.5 once built)::

    .venv/bin/python benchmarks/mobilenet.py
    .venv/bin/python benchmarks/mobilenet.py --arrays 4x4 --model-only    # seconds, no RTL
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from common import compact_count, machine_info

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "mobilenet.json"
DEFAULT_BUILD = ROOT / "build" / "bench" / "mobilenet"
KINDS = ("depthwise", "pointwise", "dense", "avgpool", "add")
#: Largest layer output the debug dump sends: ``hw/rtl/sequencer.py`` counts the dumped bytes in
#: 16-bit registers (``out_idx``, ``out_total``), so a map of 65,536 values or more truncates
#: ``out_total`` and the dump never ends (the simulation hangs).
MAX_DEBUG_MAP = (1 << 16) - 1


def bench_network(seed=0, calib_images=16):
    """The chained benchmark network (module docstring).

    Returns ``(network, labels)``: one label per engine layer, in order, ``(name, part, kind,
    where)`` with part ``"v1"``, ``"v2"`` or ``"glue"`` and the kind the layer must compile to."""
    from cnnforge.hw.frontend.network import (Add, AdaptiveAvgPool2d, Conv2d, Flatten, Linear, ReLU6,
                                      Sequential)
    layers, labels = [], []

    def put(label, *new):
        """Append layers (the first one is the engine layer ``label`` names); its index."""
        index = len(layers)
        layers.extend(new)
        labels.append(label)
        return index

    def dw(c, stride=1):
        return Conv2d(c, c, 3, stride=stride, padding=1, groups=c, algorithm="direct")

    def pw(cin, cout):
        return Conv2d(cin, cout, 1, algorithm="direct")

    def upsize(c, kernel=1, pad=4):
        """Glue: a larger map (8x8 -> 16x16 by default), the old map in the middle, its border
        the bias."""
        return Conv2d(c, c, kernel, padding=pad, groups=c, algorithm="direct")

    # MobileNetV1 (Table 1 of the paper: input sizes 224, 112, 112, 112, 56, 56, 56, 28, ...)
    put(("v1-stem-3x3s2-3-32", "v1", "dense", "V1/V2 stem 3x3 s2 (224x224 in)"),
        Conv2d(3, 32, 3, stride=2, padding=1, algorithm="direct"), ReLU6())
    put(("v1-dw-32", "v1", "depthwise", "V1 dw 1 (112x112)"), dw(32), ReLU6())
    put(("v1-pw-32-64", "v1", "pointwise", "V1 pw 1 (112x112)"), pw(32, 64), ReLU6())
    put(("glue-up-64", "glue", "depthwise", "glue 8x8 -> 16x16"), upsize(64))
    put(("v1-dw-64-s2", "v1", "depthwise", "V1 dw 2 s2 (112x112 in)"), dw(64, 2), ReLU6())
    put(("v1-pw-64-128", "v1", "pointwise", "V1 pw 2 (56x56)"), pw(64, 128), ReLU6())
    put(("v1-dw-128", "v1", "depthwise", "V1 dw 3 (56x56)"), dw(128), ReLU6())
    put(("v1-pw-128-128", "v1", "pointwise", "V1 pw 3 (56x56)"), pw(128, 128), ReLU6())
    put(("glue-up-128", "glue", "depthwise", "glue 8x8 -> 16x16"), upsize(128))
    put(("v1-dw-128-s2", "v1", "depthwise", "V1 dw 4 s2 (56x56 in)"), dw(128, 2), ReLU6())
    put(("v1-pw-128-256", "v1", "pointwise", "V1 pw 4 (28x28)"), pw(128, 256), ReLU6())
    put(("v1-dw-256", "v1", "depthwise", "V1 dw 5 (28x28)"), dw(256), ReLU6())
    put(("v1-pw-256-256", "v1", "pointwise", "V1 pw 5 (28x28)"), pw(256, 256), ReLU6())
    # 14x14, not 16x16: a 256 x 16x16 map has 65,536 values, which the debug dump cannot send
    # (its counter is 16 bits wide, see MAX_DEBUG_MAP)
    put(("glue-up-256", "glue", "depthwise", "glue 8x8 -> 14x14"), upsize(256, pad=3))
    put(("v1-dw-256-s2", "v1", "depthwise", "V1 dw 6 s2 (28x28 in)"), dw(256, 2), ReLU6())
    put(("v1-pw-256-512", "v1", "pointwise", "V1 pw 6 (14x14)"), pw(256, 512), ReLU6())
    # V1 -> V2: 512 x 7x7 -> 16 x 16x16
    put(("glue-pw-512-16", "glue", "pointwise", "glue 512 -> 16 channels"), pw(512, 16))
    put(("glue-up-16", "glue", "depthwise", "glue 7x7 -> 16x16"), upsize(16, 2, 5))
    # MobileNetV2 (Table 2: the t=6, c=24 stage at 112x112 in, the c=32 stage at 28x28)
    put(("v2-b1-expand-16-96", "v2", "pointwise", "V2 16->(96)->24 s2 expand (112x112)"),
        pw(16, 96), ReLU6())
    put(("v2-b1-dw-96-s2", "v2", "depthwise", "V2 16->(96)->24 s2 depthwise (112x112 in)"),
        dw(96, 2), ReLU6())
    b1 = put(("v2-b1-project-96-24", "v2", "pointwise", "V2 16->(96)->24 project (56x56)"),
             pw(96, 24))
    put(("v2-b2-expand-24-144", "v2", "pointwise", "V2 24->(144)->24 expand (56x56)"),
        pw(24, 144), ReLU6())
    put(("v2-b2-dw-144", "v2", "depthwise", "V2 24->(144)->24 depthwise (56x56)"),
        dw(144), ReLU6())
    put(("v2-b2-project-144-24", "v2", "pointwise", "V2 24->(144)->24 project (56x56)"),
        pw(144, 24))
    put(("v2-b2-add", "v2", "add", "V2 24->(144)->24 residual (56x56)"), Add(b1))
    glue = put(("glue-pw-24-32", "glue", "pointwise",
                "glue in place of V2's 24->(144)->32 s2 block"), pw(24, 32))
    put(("v2-b3-expand-32-192", "v2", "pointwise", "V2 32->(192)->32 expand (28x28)"),
        pw(32, 192), ReLU6())
    put(("v2-b3-dw-192", "v2", "depthwise", "V2 32->(192)->32 depthwise (28x28)"),
        dw(192), ReLU6())
    put(("v2-b3-project-192-32", "v2", "pointwise", "V2 32->(192)->32 project (28x28)"),
        pw(192, 32))
    put(("v2-b3-add", "v2", "add", "V2 32->(192)->32 residual (28x28)"), Add(glue))
    put(("head-avgpool", "v2", "avgpool", "global average pool (7x7 in the papers)"),
        AdaptiveAvgPool2d(1), Flatten())
    put(("head-fc-32-10", "v2", "dense", "classifier (1280/1024 -> 1000 in the papers)"),
        Linear(32, 10))

    input_shape = (3, 16, 16)
    net = Sequential(*layers, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in net.state_dict_shapes().items():
        if key.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            state[key] = (rng.standard_normal(shape) * math.sqrt(2 / fan_in)).astype(np.float32)
        else:
            state[key] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    net.load_state_dict(state)
    # an asymmetric input range (zero point != 0, so padding is not plain 0)
    net.calibration = (rng.standard_normal((calib_images, *input_shape)) * 2
                       + 0.4).astype(np.float32)
    return net, labels


def compile_raising(qnet, rows, cols, budget, dataflow="or"):
    """Compile, raising the input tile buffer budget to what the compiler asks for.

    Returns ``(program, budget, raises)``: ``raises`` lists the ConfigError messages met."""
    from cnnforge.hw.compiler.program import AcceleratorConfig, ConfigError, compile_network
    raises = []
    for _ in range(50):
        try:
            cfg = AcceleratorConfig(rows, cols, input_buffer_bytes=budget, dataflow=dataflow)
            return compile_network(qnet, cfg), budget, raises
        except ConfigError as exc:
            need = re.search(r"needs (\d+) bytes", str(exc))
            if not need or int(need.group(1)) <= budget:
                raise
            raises.append(str(exc))
            budget = int(need.group(1))
    raise RuntimeError("input buffer budget did not converge")


def kind_of(layer):
    """``depthwise``, ``pointwise``, ``dense``, ``add`` or ``avgpool`` from the plan."""
    from cnnforge.hw.frontend.network import AvgPool2d
    if layer.algorithm == "eltwise":
        return "add"
    if layer.algorithm == "depthwise":
        return "avgpool" if isinstance(layer.ops[0].layers[0], AvgPool2d) else "depthwise"
    v = layer.values
    if layer.gemm.kind == "conv" and v["kh"] == v["kw"] == 1:
        return "pointwise"
    return "dense"


def shape_of(layer, kind):
    v = layer.values
    if kind == "add":
        return f"{v['M']}x{v['OH']}x{v['OW']} + {v['M']}x{v['OH']}x{v['OW']}"
    if layer.gemm.kind == "linear":
        return f"FC {v['N']}->{v['M']}"
    maps = f"{v['H']}x{v['W']}" + (f"->{v['OH']}x{v['OW']}" if (v["H"], v["W"]) != (
        v["OH"], v["OW"]) else "")
    kernel = f"{v['kh']}x{v['kw']}" + (f"/s{v['sh']}" if v["sh"] > 1 else "")
    if v["ph"] > 1:
        kernel += f" pad {v['ph']}"
    if kind in ("depthwise", "avgpool"):
        return f"{kernel} {v['M']}ch {maps}"
    return f"{kernel} {v['N']}->{v['M']} {maps}"


def bounds(layer, model, cfg):
    """What the layer's time is made of (OR layers): ``array`` cycles the array is busy
    (its passes' beats), ``load`` cycles the tile loader needs (one value a cycle, all tiles),
    and the utilization each alone would allow."""
    from cnnforge.hw.models.perf import or_beats
    v = layer.values
    if layer.algorithm == "eltwise":
        return {"array_cycles": None, "load_cycles": None, "bound": "1 element/cycle",
                "array_bound_util": None, "load_bound_util": None}
    array = or_beats(v, cfg)
    load = model.ibuf_writes
    return {"array_cycles": array, "load_cycles": load,
            "bound": "array" if array >= load else "loader",
            "array_bound_util": model.ideal_cycles / array,
            "load_bound_util": model.ideal_cycles / load if load else None}


def why(layer, kind, cfg):
    """What keeps the layer below full utilization (from its plan values)."""
    v, R, C = layer.values, cfg.rows, cfg.cols
    reasons = []
    if kind == "add":
        return "element-wise: one output a cycle, no MACs on the array"
    if v.get("dw"):
        taps = v["kh"] * v["kw"]
        ratio = v["L"] // taps if v["L"] % taps == 0 else round(v["L"] / taps, 1)
        reasons.append(f"one channel per output: {taps} useful of L={v['L']} beats per PE "
                       f"(<= 1/{ratio})")
    elif v["K"] < v["L"]:
        reasons.append(f"K={v['K']} < R*C+1={v['L']}: {1 - v['K'] / v['L']:.0%} bubbles")
    if v["M"] % R:
        reasons.append(f"M={v['M']} not a multiple of R={R}")
    if v["OW"] < C or (min(v["Tc"], v["OW"]) % C):
        reasons.append(f"rows of {min(v['Tc'], v['OW'])} px on {C} columns")
    return "; ".join(reasons)


def _pct(x):
    return "-" if x is None else f"{x:.1%}"


def totals(layers):
    """Per-kind totals of the MobileNet layers, the glue, the MobileNet layers together and
    the whole network."""
    groups = {f"{k}": [e for e in layers if e["part"] != "glue" and e["kind"] == k]
              for k in KINDS}
    groups["MobileNet layers"] = [e for e in layers if e["part"] != "glue"]
    groups["glue"] = [e for e in layers if e["part"] == "glue"]
    groups["whole network"] = list(layers)
    mobilenet_cycles = sum(e["cycles"] for e in groups["MobileNet layers"])
    mobilenet_macs = sum(e["macs"] for e in groups["MobileNet layers"])
    out = {}
    for name, entries in groups.items():
        if not entries:
            continue
        cyc = sum(e["cycles"] for e in entries)
        ideal = sum(e["ideal_cycles"] for e in entries)
        macs = sum(e["macs"] for e in entries)
        out[name] = {
            "layers": len(entries), "macs": macs, "cycles": cyc,
            "model_cycles": sum(e["model_cycles"] for e in entries),
            "ideal_cycles": ideal, "utilization": ideal / cyc if cyc and macs else None,
            "array_cycles": sum(e["array_cycles"] or 0 for e in entries),
            "load_cycles": sum(e["load_cycles"] or 0 for e in entries),
            "share_of_mobilenet_cycles": (cyc / mobilenet_cycles
                                          if name not in ("glue", "whole network") else None),
            "share_of_mobilenet_macs": (macs / mobilenet_macs
                                        if name not in ("glue", "whole network") else None),
        }
    return out


def print_tables(report, console):
    from rich.table import Table
    for run in report["runs"]:
        rows, cols = run["array"]
        source = "model only" if run.get("model_only") else "measured in RTL"
        t = Table(title=f"{rows}x{cols} array ({rows * cols} PEs), output stationary, input "
                  f"buffer {run['input_buffer_bytes']} B: cycles per layer, {source}")
        for col in ("layer", "kind", "shape", "MACs", "cycles", "model", "ideal", "util.",
                    "array", "load", "bound"):
            t.add_column(col, justify="left" if col in ("layer", "kind", "shape", "bound")
                         else "right")
        for e in run["layers"]:
            style = "dim" if e["part"] == "glue" else None
            t.add_row(e["layer"], e["kind"], e["shape"], compact_count(e["macs"]), str(e["cycles"]),
                      str(e["model_cycles"]) + ("" if e["model_equals_rtl"] else " (!)"),
                      str(e["ideal_cycles"]), _pct(e["utilization"]),
                      compact_count(e["array_cycles"]), compact_count(e["load_cycles"]), e["bound"], style=style)
        console.print(t)
        k = Table(title=f"{rows}x{cols} array: totals per kind (glue layers not in the kinds)")
        for col in ("kind", "layers", "MACs", "MACs share", "cycles", "model", "ideal",
                    "util.", "array", "load", "time share"):
            k.add_column(col, justify="left" if col == "kind" else "right")
        for name, s in run["totals"].items():
            k.add_row(name, str(s["layers"]), compact_count(s["macs"]), _pct(s["share_of_mobilenet_macs"]),
                      str(s["cycles"]), str(s["model_cycles"]), str(s["ideal_cycles"]),
                      _pct(s["utilization"]), compact_count(s.get("array_cycles")),
                      compact_count(s.get("load_cycles")), _pct(s["share_of_mobilenet_cycles"]),
                      style="bold" if name in ("MobileNet layers", "whole network") else None)
        console.print(k)
        line = (f"  engine counter: {run['cycles_per_image']} cycles/image (model "
                f"{run['model_cycles_per_image']}; layers + 3 cycles of sequencing each)")
        if not run.get("model_only"):
            line += (f"; build {run['build_seconds']:.0f} s, simulation "
                     f"{run['sim_seconds']:.0f} s ({run['sim_cycles_per_second']} cycles/s)")
        console.print(line)
        if run.get("auto_model_cycles_per_image"):
            console.print(f"  model, dataflow 'auto' (depthwise stays OR): "
                          f"{run['auto_model_cycles_per_image']} cycles/image")
    m = report.get("model_vs_rtl")
    if m:
        console.print(f"model vs RTL: {m['agree_on_every_counter']}/{m['layer_runs']} layer runs "
                      f"agree on every counter; largest cycle error {m['max_cycle_error']:.2%}")


def run(args):
    from rich.console import Console

    from cnnforge.hw.models.perf import network_model
    from cnnforge.hw.frontend.quantize import quantize
    from cnnforge.sim.accel import AcceleratorSim, compare

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    t_start = time.perf_counter()
    info = machine_info("verilator", "cocotb", "amaranth", "numpy")
    net, labels = bench_network()
    qnet = quantize(net)
    rng = np.random.default_rng(1)
    images = qnet.quantize_input((rng.standard_normal((args.images, *net.input_shape)) * 2
                                  + 0.4).astype(np.float32))
    arrays = [tuple(int(x) for x in a.lower().split("x")) for a in args.arrays]
    runs, failures = [], []
    for rows, cols in arrays:
        program, budget, raises = compile_raising(qnet, rows, cols, args.buffer_bytes)
        cfg = program.config
        assert len(program.layers) == len(labels), (len(program.layers), len(labels))
        too_big = [lab[0] for layer, lab in zip(program.layers, labels)
                   if layer.values["out_size"] > MAX_DEBUG_MAP]
        if too_big and not args.model_only:
            raise SystemExit(f"layers {too_big} write more than {MAX_DEBUG_MAP} values: the "
                             "debug dump would never end (16-bit counters in hw/rtl/sequencer.py)")
        models, total = network_model(program)
        auto, _, _ = compile_raising(qnet, rows, cols, budget, dataflow="auto")
        auto_models, auto_total = network_model(auto)
        if args.model_only:
            result, t_build = None, 0.0
        else:
            build = Path(args.build_dir) / f"{rows}x{cols}"
            t0 = time.perf_counter()
            with console.status(f"{rows}x{cols}: Verilator build ({len(program.layers)} "
                                f"layers, input buffer {budget} B)"):
                sim = AcceleratorSim(program, build).build()
            t_build = time.perf_counter() - t0
            console.print(f"{rows}x{cols}: built in {t_build:.0f} s")
            with console.status(f"{rows}x{cols}: simulating {len(images)} image(s), "
                                f"~{total} engine cycles each"):
                result = sim.run(images, debug=True)
            _, mismatches = compare(program, images, result)
            bad = {k: n for k, n in mismatches["layers"].items() if n}
            if mismatches["logits"] or bad:
                raise SystemExit(f"{rows}x{cols}: RTL != golden: logits {mismatches['logits']}"
                                 f" image(s), layers {bad}")
        layers = []
        for i, (layer, model, amodel, alayer, (label, part, expect, where)) in enumerate(
                zip(program.layers, models, auto_models, auto.layers, labels)):
            kind = kind_of(layer)
            assert kind == expect, (label, kind, expect)
            predicted = model.counters()
            if result is not None:
                measured = result.layers[0][i][0]
                same = all(per_image[i][0] == measured for per_image in result.layers)
                agree = measured == predicted
                if not agree:
                    failures.append({"array": [rows, cols], "layer": label,
                                     "measured": measured, "model": predicted})
            else:
                measured, same, agree = predicted, True, True
            entry = {
                "layer": label, "part": part, "kind": kind, "where": where,
                "engine_layer": layer.name, "algorithm": layer.algorithm,
                "dataflow": layer.dataflow, "shape": shape_of(layer, kind),
                "macs": model.macs, "ideal_cycles": model.ideal_cycles,
                "cycles": measured["cycles"], "model_cycles": predicted["cycles"],
                "cycle_error": (predicted["cycles"] - measured["cycles"]) / measured["cycles"],
                "utilization": (model.ideal_cycles / measured["cycles"]
                                if model.macs else None),
                "measured": measured, "model": predicted, "model_equals_rtl": agree,
                "same_for_every_image": same,
                "tiling": {k: int(x) for k, x in layer.tiling.items()},
                "plan": {k: int(layer.values[k]) for k in ("K", "L", "MB", "ntr", "ntc")},
                "passes": layer.passes if layer.algorithm != "eltwise" else 0,
                "limits": why(layer, kind, cfg),
                "auto_dataflow": alayer.dataflow, "auto_model_cycles": amodel.cycles,
            }
            entry.update(bounds(layer, model, cfg))
            layers.append(entry)
        run_entry = {
            "array": [rows, cols], "pes": rows * cols, "dataflow": "or",
            "input_buffer_bytes": budget, "budget_raised_by": raises,
            "model_only": bool(args.model_only), "images": int(len(images)),
            "cycles_per_image": (int(result.cycles[0]) if result is not None else total),
            "model_cycles_per_image": total,
            "auto_model_cycles_per_image": auto_total,
            "layers": layers, "totals": totals(layers),
        }
        if result is not None:
            run_entry.update(build_seconds=round(t_build, 1),
                             sim_seconds=round(result.wall_seconds, 1),
                             sim_cycles=int(result.sim_cycles),
                             sim_cycles_per_second=round(result.cycles_per_second))
            console.print(f"{rows}x{cols}: {int(result.cycles[0])} cycles/image (model "
                          f"{total}), build {t_build:.0f} s, simulation "
                          f"{result.wall_seconds:.0f} s, 0 mismatches (every layer's map)")
        runs.append(run_entry)

    checked = sum(len(r["layers"]) for r in runs)
    worst = max((abs(e["cycle_error"]) for r in runs for e in r["layers"]), default=0.0)
    wall = time.perf_counter() - t_start
    report = {
        "benchmark": "benchmarks/mobilenet.py",
        "command": "python benchmarks/mobilenet.py " + " ".join(sys.argv[1:]),
        "machine": info,
        "images": args.images,
        "spatial": {"maps": "8x8",
                    "16x16": "the network input (3x16x16, stem stride 2), the inputs of the "
                             "stride-2 depthwise layers and V2's first expansion",
                    "14x14/7x7": "V1's dw 256 s2 (14x14 -> 7x7) and pw 256->512 (7x7): a "
                                 "256x16x16 map (65,536 values) overflows the debug dump's "
                                 "16-bit counter",
                    "note": "reduced from the papers' 224x224 input (112x112 ... 14x14 for "
                            "these layers) so the RTL simulation finishes in minutes"},
        "model_vs_rtl": (None if args.model_only else
                         {"layer_runs": checked, "agree_on_every_counter": checked - len(failures),
                          "max_cycle_error": worst, "differences": failures}),
        "runs": runs,
        "wall_seconds": round(wall, 1),
    }
    print_tables(report, console)
    for f in failures:
        console.print(f"[red]model != RTL[/]: {f}")
    console.print(f"wall time {wall / 60:.1f} min")
    if args.model_only:
        return 0
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"results: {out}")
    return 1 if failures else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arrays", nargs="+", default=["4x4", "8x8"], help="PE arrays (RxC)")
    p.add_argument("--images", type=int, default=1, help="images per run (default 1)")
    p.add_argument("--buffer-bytes", type=int, default=4096,
                   help="starting input tile buffer budget, raised to what the compiler asks "
                        "for (default 4096)")
    p.add_argument("--json", default=str(DEFAULT_JSON))
    p.add_argument("--build-dir", default=str(DEFAULT_BUILD))
    p.add_argument("--model-only", action="store_true",
                   help="the analytic model only (no Verilator): print, write nothing")
    p.add_argument("--report-only", action="store_true",
                   help="print the tables of an existing --json file, run nothing")
    args = p.parse_args(argv)
    if args.report_only:
        from rich.console import Console
        console = Console()
        if not console.is_terminal:
            console = Console(width=170)
        print_tables(json.loads(Path(args.json).read_text()), console)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
