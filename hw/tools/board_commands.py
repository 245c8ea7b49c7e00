"""The ``cnnforge`` subcommands of the FPGA flow: ``synth``, ``build``, ``flash``, ``infer``.

:func:`add_subcommands` adds them to the parser of :mod:`cnnforge.hw.tools.cli`; each reports
a user error as :class:`cnnforge.hw.tools.common.UserError` (one line, exit status 2). ``synth``
exits with 1 when the design does not fit or misses the clock, with the report printed all the
same.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cnnforge.boards.bitstream import summary_line
from cnnforge.boards.build import (BOARDS, BoardError, board, build_bitstream, default_bitstream,
                                   flash)
from cnnforge.boards.protocol import LinkError
from cnnforge.boards.runtime import BoardLink
from cnnforge.boards.synth import SynthError, synthesize
from cnnforge.examples.digits import NET as DIGITS_NET
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import device_config, fit_memories
from cnnforge.hw.compiler.program import weight_image
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.tools.common import (NET_HELP, UserError, add_calibration_option,
                                      atomic_write, load_calibrated, preflight, read_inputs)

__all__ = ["add_subcommands", "cmd_synth", "cmd_build", "cmd_flash", "cmd_infer"]


def _program(net, device, rows, cols, buffer_bytes, algorithm="auto", calibration=None,
             force=False):
    """The program for ``device`` and its memory plan: ``rows`` × ``cols``, or for None the array
    :func:`~cnnforge.hw.compiler.memory.device_config` chooses, SPRAM taken where block RAM is too
    small (:func:`~cnnforge.hw.compiler.memory.fit_memories`); a design whose memories do not fit
    the device is refused before yosys (one line naming the memory) unless ``force``."""
    qnet = quantize(load_calibrated(net, calibration))
    config = device_config(qnet, device, rows, cols, input_buffer_bytes=buffer_bytes,
                           algorithm=algorithm)
    program, plan = fit_memories(qnet, config, device)
    preflight(program, force=force)
    if not plan.fits and not force:
        raise UserError(f"{plan.reason}; --force tries anyway")
    return program, plan


def _write_json(path, data):
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


def _pct(used, total):
    if used is None:
        return "-"
    return f"{used}/{total} ({100 * used / total:.0f}%)" if total else str(used)


def _mhz(value):
    return "failed" if value is None else f"{value:.1f}"


def seeds_line(report):
    """``Fmax over seeds 1..3: 30.1 / 31.2 / 31.9 MHz (min / median / max) ...``: one line."""
    seeds = sorted(report.fmax_mhz_by_seed)
    if report.fmax_mhz_max is None:
        return f"nextpnr placed with no seed ({seeds[0]}..{seeds[-1]})"
    each = ", ".join(f"{s}: {_mhz(report.fmax_mhz_by_seed[s])}" for s in seeds)
    return (f"Fmax over seeds {seeds[0]}..{seeds[-1]}: {_mhz(report.fmax_mhz_min)} / "
            f"{_mhz(report.fmax_mhz_median)} / {_mhz(report.fmax_mhz_max)} MHz (min / median / "
            f"max; {each}); the figures above are seed {report.seed}'s placement")


def print_synth_report(report, console):
    """The human-readable form of a :class:`~cnnforge.boards.synth.SynthReport`."""
    table = Table(title=f"{report.part}: {report.array[0]}x{report.array[1]} PE array "
                  f"({report.design})")
    table.add_column("resource")
    table.add_column("used / total", justify="right")
    table.add_row("logic cells" if report.spram_total is not None else "LUT4s",
                  _pct(report.luts, report.luts_total))
    table.add_row("DSP blocks", _pct(report.dsps, report.dsps_total))
    table.add_row("int8 MACs per cycle", f"{report.int8_macs_per_cycle} of "
                  f"{report.peak_int8_macs_per_cycle} (DSP peak)")
    table.add_row("block RAM (EBR)", _pct(report.bram, report.bram_total))
    if report.spram_total is not None:
        table.add_row("SPRAM", _pct(report.spram, report.spram_total))
    table.add_row("flip-flops", "-" if report.flip_flops is None else str(report.flip_flops))
    fmax = "-" if report.fmax_mhz is None else f"{report.fmax_mhz:.1f} MHz"
    table.add_row("Fmax (core clock)", f"{fmax} (target {report.clock_mhz:g} MHz)")
    console.print(table)
    mapped = [m for m in report.multipliers if m["mapped"] != "logic"]
    console.print(f"multipliers on DSP blocks: {len(mapped)} of {len(report.multipliers)} "
                  f"({', '.join(sorted({m['width'] + ' ' + m['mapped'] for m in mapped}))})")
    in_bram = [m["memory"] for m in report.memories if m["mapped"] in ("block RAM", "SPRAM")]
    console.print(f"memories in block RAM: {', '.join(in_bram) or 'none'}")
    for note in report.notes:
        console.print(f"note: {note}")
    if len(report.fmax_mhz_by_seed) > 1:
        console.print(seeds_line(report))
    if report.critical_path:
        cp = report.critical_path[0]
        levels = f"{cp['levels']} logic levels, " if "levels" in cp else ""
        if cp.get("carry_steps"):
            levels = f"{cp['levels']} logic levels (+{cp['carry_steps']} carry steps), "
        console.print(f"critical path: {cp['from']} -> {cp['to']}: {levels}{cp['delay_ns']} ns "
                      f"({cp['logic_ns']} ns logic, {cp['routing_ns']} ns routing)",
                      markup=False)
    verdict = ("fits" if report.fits else "DOES NOT FIT") + ", " + (
        "meets" if report.meets_clock else "MISSES") + f" {report.clock_mhz:g} MHz"
    console.print(f"[bold]{verdict}[/] (yosys {report.yosys_seconds:.0f} s, nextpnr "
                  f"{report.nextpnr_seconds:.0f} s)")


def cmd_synth(args):
    for option, value in (("--seeds", args.seeds), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, not {value}")
    console = Console()
    device = DEVICES[args.device]
    program, plan = _program(args.net, device, args.rows, args.cols, args.buffer_bytes,
                             args.algorithm or device.algorithm, args.calibration, args.force)
    rows, cols = program.config.rows, program.config.cols
    build_dir = Path(args.build_dir or Path("build") / "synth" / f"{device.key}_{rows}x{cols}")
    try:
        report = synthesize(program, device, build_dir=build_dir, clock_mhz=args.clock,
                            seed=args.seed, seeds=args.seeds, workers=args.workers,
                            dask=args.dask,
                            log=lambda msg: console.print(f"[dim]{msg}[/]"))
    except SynthError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    print_synth_report(report, console)
    if args.json:
        _write_json(args.json, {**report.to_json(), "memory": plan.to_json()})
        console.print(f"report: {args.json}")
    return 0 if report.ok else 1


def cmd_build(args):
    try:
        spec, _, _ = board(args.board)
    except BoardError as exc:
        raise UserError(str(exc)) from None
    # (the board's array is its device's: None lets device_config choose)
    program, _ = _program(args.net, DEVICES[spec.device], args.rows, args.cols,
                          args.buffer_bytes, args.algorithm or spec.algorithm, args.calibration,
                          args.force)
    t0 = time.perf_counter()
    try:
        result = build_bitstream(program, spec.name, args.build_dir, clock_mhz=args.clock,
                                 log=print)
    except BoardError as exc:
        raise UserError(str(exc)) from None
    print(summary_line(result, program.config.rows, program.config.cols,
                       time.perf_counter() - t0))
    if args.json:
        _write_json(args.json, result.to_json())
    return 0


def cmd_flash(args):
    try:
        bitstream = args.bitstream or default_bitstream(args.board, args.build_dir)
        return flash(args.board, bitstream, sram=args.sram, dry_run=args.dry_run,
                     weights=args.weights)
    except BoardError as exc:
        raise UserError(str(exc)) from None


def _board_program(args):
    """The program ``cnnforge build --board`` makes of ``args.net`` (its weight image)."""
    try:
        spec, _, _ = board(args.board)
    except BoardError as exc:
        raise UserError(str(exc)) from None
    program, _ = _program(args.net, DEVICES[spec.device], None, None,
                          spec.input_buffer_bytes, spec.algorithm, args.calibration, force=True)
    return program


def cmd_infer(args):
    network = load_calibrated(args.net, args.calibration)
    qnet = quantize(network)
    images = qnet.model_input(read_inputs(args.image, qnet))
    output_shape = tuple(qnet.ops[-1].output_shape)
    output_size = int(np.prod(output_shape))
    image = weight_image(_board_program(args))
    try:
        with BoardLink(args.port, output_size, baud=args.baud, timeout=args.timeout) as link:
            if link.ensure_weights(image, progress=lambda sent, total: print(
                    f"\ruploading weights: {sent:,} of {total:,} bytes", end="", flush=True)):
                print()
            for index, image in enumerate(images):
                result = link.infer(image)
                logits = " ".join(str(int(v)) for v in result.logits)
                prefix = f"image {index}: " if len(images) > 1 else ""
                shown = f"logits [{logits}]"
                out = qnet.model_output(np.asarray(result.logits).reshape(
                    (1,) + output_shape)).reshape(-1)
                if not np.array_equal(out, result.logits):       # a TFLite model's SOFTMAX
                    shown += f"  output [{' '.join(str(int(v)) for v in out)}]"
                print(f"{prefix}class {result.cls}  {shown}  ({result.cycles} cycles)")
    except LinkError as exc:
        raise UserError(str(exc)) from None
    return 0


def add_subcommands(sub):
    """Add ``synth``, ``build``, ``flash`` and ``infer`` to the ``cnnforge`` subparsers."""
    boards = [*BOARDS, "ulx3s"]
    p = sub.add_parser("synth", help="synthesis and place-and-route (YoWASP yosys + nextpnr): "
                       "logic, DSP, block RAM against the device, Fmax of the core clock")
    p.add_argument("net", metavar="NET", help=NET_HELP)
    p.add_argument("--force", action="store_true", help="go on with a design the pre-flight "
                   "check expects to run away (millions of weights)")
    p.add_argument("--device", required=True, choices=sorted(DEVICES))
    p.add_argument("--rows", type=int, help="PE array rows (default: the device's, "
                   "docs/boards.md)")
    p.add_argument("--cols", type=int, help="PE array columns (default: the device's)")
    p.add_argument("--buffer-bytes", type=int, default=4096)
    p.add_argument("--algorithm", choices=["auto", "direct", "winograd"],
                   help="AcceleratorConfig.algorithm (default: the device's; direct on up5k)")
    p.add_argument("--clock", type=float, help="core clock to meet, MHz (default 48 on up5k, "
                   "100 on ECP5); missing it exits with status 1")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (the first of "
                   "--seeds)")
    p.add_argument("--seeds", type=int, default=1, metavar="K", help="place with K seeds "
                   "(SEED .. SEED+K-1) on the one yosys netlist, in parallel: Fmax per seed, "
                   "min/median/max, the median seed's placement reported (default 1)")
    p.add_argument("--workers", type=int, metavar="N", help="nextpnr processes at a time "
                   "(default the CPU count)")
    p.add_argument("--dask", metavar="ADDRESS", help="place the seeds on the workers of this "
                   "dask.distributed scheduler instead (tcp://host:8786): the netlist is sent "
                   "to each worker once, the logs and reports come back to the build folder")
    p.add_argument("--json", help="write the report to this JSON file")
    p.add_argument("--build-dir", help="default build/synth/<device>_<R>x<C>")
    add_calibration_option(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("build", help="bitstream for a board (amaranth build + YoWASP tools)")
    p.add_argument("net", metavar="NET", help=NET_HELP)
    p.add_argument("--force", action="store_true", help="go on with a design the pre-flight "
                   "check expects to run away (millions of weights)")
    p.add_argument("--board", required=True, choices=boards)
    p.add_argument("--rows", type=int, help="PE array rows (default: the board's)")
    p.add_argument("--cols", type=int, help="PE array columns (default: the board's)")
    p.add_argument("--buffer-bytes", type=int, default=4096)
    p.add_argument("--algorithm", choices=["auto", "direct", "winograd"],
                   help="AcceleratorConfig.algorithm (default: the board's)")
    p.add_argument("--clock", type=float, help="core clock, MHz (default: the board's, "
                   "docs/boards.md); a bitstream that misses it is an error")
    p.add_argument("--build-dir", default="build",
                   help="the build goes to BUILD_DIR/<board>/ (default build)")
    p.add_argument("--json", help="write resources, Fmax and wall time to this JSON file")
    add_calibration_option(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("flash", help="program a board with openFPGALoader")
    p.add_argument("--board", required=True, choices=boards)
    p.add_argument("--bitstream", help="default BUILD_DIR/<board>/top.bin|bit")
    p.add_argument("--build-dir", default="build")
    p.add_argument("--sram", action="store_true",
                   help="ULX3S: load the FPGA only (volatile) instead of writing the flash")
    p.add_argument("--weights", help="the weight image of a design with SPRAM weights, "
                   "written into the SPI flash where the board reads it at boot (default "
                   "weights.bin beside the bitstream, when the build wrote one)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("infer", help="classify images on a board over its UART")
    p.add_argument("image", metavar="IMAGE", help=".npy: one input or a batch in the "
                   "network's own layout ((C, H, W); a TFLite model's (H, W, C)); float is "
                   "quantized with the network's input scale, int8 is sent as is")
    p.add_argument("--port", required=True, help="serial port of the board (/dev/ttyUSB1)")
    p.add_argument("--net", default=DIGITS_NET,
                   help="the network the board was built for (default: the digits example)")
    p.add_argument("--board", choices=boards, default="icebreaker",
                   help="the board it was built for (default icebreaker): its design gives "
                   "the weight image, uploaded when the board's weights (SPRAM) differ")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for an answer")
    add_calibration_option(p)
    p.set_defaults(func=cmd_infer)
