"""What bounds the MLPerf Tiny models on their devices: per layer, the cycles the engine takes
against three floors its datapath sets, from the cycle model (``layer_model``, equal to the RTL
counters on every layer in the tests).

* **compute**: ``⌈MACs / (R·C)⌉``, every PE busy every cycle;
* **load**: the tile loader writes one value a cycle into the input tile buffer, two in the
  layers its two lanes pair (``loader_lanes``, the ECP5 designs; halos and padding included:
  the ``ibuf_writes`` counter);
* **drain**: one result a cycle (every ``ppu_interval`` cycles) leaves the array through the
  post-processor into the feature map (the ``fm_writes`` counter).

A layer cannot take fewer cycles than the largest of its three; the sum of the per-layer
maxima says how much of a model's time those floors explain, and the totals what a wider
loader or more drain lanes could give. Each model runs the design ``cnnforge synth`` builds for
its device (``device_config``; VWW and ResNet-8 on the LFE5U-85F's 8×8, KWS on the UP5K's 4×3),
direct convolution.

    .venv/bin/python benchmarks/floors.py

Results: ``benchmarks/results/floors.json``; the Markdown table goes to stdout. Seconds.
"""

import json
from pathlib import Path

from common import machine_info

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import device_config
from cnnforge.hw.compiler.program import compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.models.perf import network_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "floors.json"
MODELS = ROOT / "examples" / "mlperf_tiny"
RUNS = [("kws_ref_model", "up5k", None), ("vww_96_int8", "lfe5u-85f", 8),
        ("pretrainedResnet_quant", "lfe5u-85f", 8)]


def floors(name, device, size):
    """The per-layer floors of model ``name`` on ``device`` (its array, or ``size`` × ``size``)."""
    qnet = load_network(MODELS / f"{name}.tflite").quantized
    cfg = device_config(qnet, DEVICES[device], size, size, algorithm="direct")
    program = compile_network(qnet, cfg)
    models, cycles = network_model(program)
    layers = []
    for layer, lm in zip(program.layers, models):
        row = {"layer": layer.name, "type": layer.type, "cycles": lm.cycles,
               "compute": lm.ideal_cycles,
               "load": -(-lm.ibuf_writes // (1 + layer.values["ld_pair"])),
               "drain": lm.fm_writes * cfg.ppu_interval}
        row["bound"] = max(("compute", "load", "drain"), key=lambda k: row[k])
        layers.append(row)
    total = {k: sum(r[k] for r in layers) for k in ("cycles", "compute", "load", "drain")}
    explained = sum(max(r["compute"], r["load"], r["drain"]) for r in layers)
    return {"model": name, "device": device, "array": [cfg.rows, cfg.cols],
            "ppu_interval": cfg.ppu_interval, "loader_lanes": cfg.loader_lanes,
            "cycles_per_inference": cycles,
            "macs": sum(lm.macs for lm in models), "totals": total,
            "max_of_floors": explained,
            "explained": round(explained / total["cycles"], 3),
            "bound_by": {k: sum(r["cycles"] for r in layers if r["bound"] == k)
                         for k in ("compute", "load", "drain")},
            "layers": layers}


def main():
    results = [floors(*run) for run in RUNS]
    print("| model | device, array | cycles | compute floor | load floor | drain floor "
          "| sum of per-layer max | cycles in load- / drain- / compute-bound layers |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        t, b = r["totals"], r["bound_by"]
        print(f"| {r['model']} | {r['device']} {r['array'][0]}×{r['array'][1]} "
              f"| {r['cycles_per_inference']:,} | {t['compute']:,} | {t['load']:,} "
              f"| {t['drain']:,} | {r['max_of_floors']:,} ({r['explained']:.0%}) "
              f"| {b['load']:,} / {b['drain']:,} / {b['compute']:,} |")
    RESULTS.write_text(json.dumps({"benchmark": "benchmarks/floors.py",
                                   "machine": machine_info("amaranth", "numpy"),
                                   "results": results}, indent=1))


if __name__ == "__main__":
    main()
