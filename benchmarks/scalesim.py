"""cnnforge's cycles per layer against SCALE-Sim's analytical compute cycles, on the same array.

SCALE-Sim (Samajdar et al., "A Systematic Methodology for Characterizing Scalability of DNN
Accelerators using SCALE-Sim", ISPASS 2020) maps a convolution to a GEMM of ``Sr = OH·OW`` output
pixels, ``Sc = M`` filters and a window of ``T = kh·kw·N`` and runs it in folds, one after the
other, each of

* ``os`` (output stationary): pixels on the rows, filters on the columns, the window in time,
  ``⌈Sr/R⌉·⌈Sc/C⌉`` folds of ``R + C + T − 2`` cycles;
* ``ws`` (weight stationary): window on the rows, filters on the columns, pixels in time,
  ``⌈T/R⌉·⌈Sc/C⌉`` folds of ``2R + C + Sr − 2`` cycles;
* ``is`` (input stationary): window on the rows, pixels on the columns, filters in time,
  ``⌈T/R⌉·⌈Sr/C⌉`` folds of ``2R + C + Sc − 2`` cycles

(compute only: SCALE-Sim's memory model is not applied, as its published per-fold formulas).
cnnforge's side is the cycle model of each layer under OR, IR and WR (``layer_model``, which the
RTL's counters equal on every layer in the tests), loads, drains and the post-processor
included. The layers are those of ``benchmarks/dataflows.py``: the MobileNetV1/V2 stem and
pointwise layers at its reduced map size, and the digits network's layers.

    .venv/bin/python benchmarks/scalesim.py [--arrays 8x8 4x4]

Results: ``benchmarks/results/scalesim.json``. Seconds (model only).
"""

import argparse
import json
import math
from pathlib import Path

from common import machine_info
from dataflows import bench_network

from cnnforge.hw.compiler.program import AcceleratorConfig, _layers_from_ops, compile_network
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.perf import layer_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scalesim.json"
DATAFLOWS = ("or", "ir", "wr")


def scalesim_cycles(v, rows, cols):
    """SCALE-Sim's compute cycles of a layer (module docstring) per dataflow.

    Parameters
    ----------
    v : dict
        The layer's plan values (``N``, ``M``, ``OH``, ``OW``, ``kh``, ``kw``; a depthwise layer
        is not a GEMM SCALE-Sim maps this way and is not asked here).
    rows, cols : int

    Returns
    -------
    dict
        ``{"os": int, "ws": int, "is": int}``.
    """
    # (a pointwise layer the engine runs as one row has OH = 1, OW = H·W: the same pixels)
    sr, sc, t = v["OH"] * v["OW"], v["M"], v["kh"] * v["kw"] * v["N"]
    return {"os": math.ceil(sr / rows) * math.ceil(sc / cols) * (rows + cols + t - 2),
            "ws": math.ceil(t / rows) * math.ceil(sc / cols) * (2 * rows + cols + sr - 2),
            "is": math.ceil(t / rows) * math.ceil(sr / cols) * (2 * rows + cols + sc - 2)}


def compare(qnet, labels, rows, cols):
    """One row per reported layer: cnnforge's cycles per dataflow and SCALE-Sim's."""
    direct = {"+".join(o.name for o in grp): "direct" for grp in _layers_from_ops(qnet)}
    programs = {df: compile_network(qnet, AcceleratorConfig(rows, cols, dataflow=df),
                                    algorithms=direct) for df in DATAFLOWS}
    out = []
    for i, (name, where, part) in enumerate(labels):
        if part == "glue":
            continue
        ours = {df: layer_model(programs[df].layers[i].values, programs[df].config).cycles
                for df in DATAFLOWS}
        theirs = scalesim_cycles(programs["or"].layers[i].values, rows, cols)
        best, ref = min(ours, key=ours.get), min(theirs, key=theirs.get)
        out.append({"layer": name, "where": where, "cnnforge": ours, "scalesim": theirs,
                    "best": best, "scalesim_best": ref,
                    "ratio": round(ours[best] / theirs[ref], 3),
                    "or_vs_os": round(ours["or"] / theirs["os"], 3)})
    return out


def print_table(rows_, array):
    print(f"\n{array}: cycles, cnnforge (model = RTL) vs SCALE-Sim (compute, per-fold formulas)")
    print("| layer | OR | IR | WR | os | ws | is | best / SCALE-Sim best | OR / os |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows_:
        o, s = r["cnnforge"], r["scalesim"]
        print(f"| {r['layer']} | {o['or']:,} | {o['ir']:,} | {o['wr']:,} | {s['os']:,} | "
              f"{s['ws']:,} | {s['is']:,} | {r['ratio']:.2f} ({r['best']} / "
              f"{r['scalesim_best']}) | {r['or_vs_os']:.2f} |")
    at_or_below = sum(r["ratio"] <= 1 for r in rows_)
    print(f"cnnforge's best at or below SCALE-Sim's best on {at_or_below} of {len(rows_)} layers")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arrays", nargs="+", default=["8x8", "4x4"], metavar="RxC")
    p.add_argument("--json", default=str(RESULTS))
    args = p.parse_args(argv)
    net, labels = bench_network()
    qnet = quantize(net)
    report = {"machine": machine_info("amaranth"), "arrays": {}}
    for array in args.arrays:
        rows, cols = (int(x) for x in array.lower().split("x"))
        rows_ = compare(qnet, labels, rows, cols)
        report["arrays"][array] = rows_
        print_table(rows_, array)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
