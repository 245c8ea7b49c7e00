"""Synthesis benchmark: the digits network on the iCE40 UP5K (iCEBreaker) and the ECP5 LFE5U-85F
(ULX3S), network to bitstream.

For each board: compile the network for the board's PE array, build the bitstream (yosys,
nextpnr, icepack / ecppack, the whole flow timed), read resources and Fmax from nextpnr's
report, and measure cycles per image in RTL simulation (Verilator, the accelerator's own cycle
counter). Images per second are at Fmax, compute only (the UART at 115200 baud carries about 128
digits frames a second). Targets: Fmax >= 48 MHz on UP5K, >= 100 MHz on LFE5U-85F.

    .venv/bin/python benchmarks/synth.py [--boards icebreaker ulx3s-85f] [--images 20]

Writes build/benchmarks/synth.json and prints the Markdown table of the README.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"up5k": 48.0, "lfe5u-85f": 100.0, "lfe5u-25f": 100.0}


def measure(board_name, images, out_root):
    from cnnforge.boards.build import board, build_bitstream
    from cnnforge.hw.compiler.program import compile_network
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize
    from cnnforge.sim.accel import AcceleratorSim, compare

    spec, _, _ = board(board_name)
    t0 = time.perf_counter()
    network = load_network(str(ROOT / "examples" / "digits" / "net.py"))
    qnet = quantize(network)
    program = compile_network(qnet, spec.config(qnet))
    result = build_bitstream(program, spec.name, out_root, allow_timing_fail=True,
                             log=lambda msg: print(msg, file=sys.stderr))
    flow_s = time.perf_counter() - t0

    x, _ = network.test_data()
    xq = qnet.quantize_input(x[:images])
    sim = AcceleratorSim(program, out_root / "sim" / spec.name).build()
    rtl = sim.run(xq, debug=False)
    _, mismatches = compare(program, xq, rtl)
    cycles = float(rtl.cycles.mean())
    s = result.summary
    fmax = s["fmax_mhz"]
    return {
        "board": spec.name, "device": spec.device, "array": f"{spec.rows}x{spec.cols}",
        "luts": s["luts"], "luts_total": s["luts_total"], "dsps": s["dsps"],
        "dsps_total": s["dsps_total"], "bram": s["bram"], "bram_total": s["bram_total"],
        "spram": s.get("spram"), "fmax_mhz": fmax, "core_mhz": result.core_mhz,
        "target_mhz": TARGETS[spec.device], "cycles_per_image": cycles,
        "images_per_s_at_fmax": None if not fmax else fmax * 1e6 / cycles,
        "flow_seconds": flow_s, "rtl_golden_mismatches": mismatches["logits"],
        "critical_path": s.get("critical_path"), "bitstream": str(result.bitstream),
    }


def table(rows):
    lines = ["| device (board) | array | LUTs | DSPs | block RAM | Fmax | cycles/image | "
             "images/s at Fmax | flow wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmax = "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f} MHz"
        ok = "" if r["fmax_mhz"] and r["fmax_mhz"] >= r["target_mhz"] else \
            f" (target {r['target_mhz']:g})"
        ips = "-" if not r["images_per_s_at_fmax"] else f"{r['images_per_s_at_fmax']:,.0f}"
        lines.append(
            f"| {r['device']} ({r['board']}) | {r['array']} | {r['luts']}/{r['luts_total']} | "
            f"{r['dsps']}/{r['dsps_total']} | {r['bram']}/{r['bram_total']} EBR | {fmax}{ok} | "
            f"{r['cycles_per_image']:.0f} | {ips} | {r['flow_seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s-85f"])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "build" / "benchmarks"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    rows = [measure(name, args.images, out) for name in args.boards]
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    for r in rows:
        if r["critical_path"]:
            cp = r["critical_path"][0]
            print(f"{r['device']} critical path: {cp['from']} -> {cp['to']}: {cp['delay_ns']} ns "
                  f"({cp['logic_ns']} logic, {cp['routing_ns']} routing)")
    return 0 if all(r["rtl_golden_mismatches"] == 0 for r in rows) else 1


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    sys.exit(main())
