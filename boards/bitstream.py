"""One board's bitstream: amaranth's build with the YoWASP tools, and the board files' entry.

:func:`build_board` elaborates a board top for a compiled network and runs amaranth's
``platform.build`` with ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5`` and
``ECPPACK`` pointing at the ``yowasp-*`` executables of the virtualenv, so nothing but PyPI
packages is needed. It takes the board by its parts (spec, top, platform), so the board files
(``icebreaker.py``, ``ulx3s.py``) can call it from ``python -m cnnforge.boards.<board>``
(:func:`board_main`); :mod:`cnnforge.boards.build` looks boards up by name on top of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cnnforge.boards.synth import (ONE_HOT_FSMS, SynthError, analyze, check_yosys_log,
                                  pnr_summary, tool_env, undefined_collisions)
from cnnforge.boards.uart import uart_divisor
from cnnforge.examples.digits import NET as DIGITS_NET
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import fit_memories
from cnnforge.hw.compiler.program import ConfigError, weight_image
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.network import NetworkError
from cnnforge.hw.frontend.quantize import quantize

__all__ = ["BoardError", "BuildResult", "build_board", "summary_line", "board_main",
           "WEIGHTS_FILE"]

#: The weight image a build of a design with SPRAM weights writes beside the bitstream.
WEIGHTS_FILE = "weights.bin"


class BoardError(RuntimeError):
    """Something the user can fix (no board, no bitstream, a tool that cannot start): one line."""


@dataclass
class BuildResult:
    """A finished bitstream build.

    Members
    -------
    bitstream : Path
    weights : Path or None
        The weight image (``weights.bin`` beside the bitstream) of a design with SPRAM weights,
        for ``cnnforge flash`` to write into the board's SPI flash and ``cnnforge infer`` to
        upload; None when the weights are in the bitstream.
    board : str
    array : list
        PE array rows, cols.
    core_mhz : float
        Core clock the PLL makes (what timing was checked against).
    summary : dict
        From nextpnr's report: ``luts``, ``dsps``, ``bram``, ``spram``, ``fmax_mhz`` and the
        device totals.
    seconds : float
        Wall time of elaboration + synthesis + place-and-route + packing.
    """

    bitstream: Path
    weights: Path | None
    board: str
    array: list
    core_mhz: float
    summary: dict
    seconds: float

    def to_json(self):
        return {"bitstream": str(self.bitstream),
                "weights": str(self.weights) if self.weights else None,
                "board": self.board, "array": self.array,
                "core_mhz": self.core_mhz, **self.summary, "seconds": round(self.seconds, 1)}


def build_board(program, spec, top_cls, make_platform, build_dir="build", *, clock_mhz=None,
                allow_timing_fail=False, log=None):
    """Build the bitstream of ``program`` for a board given by its parts.

    Parameters
    ----------
    program : Program
        Compiled for the board's array (:meth:`BoardSpec.config`).
    spec : BoardSpec
        The board.
    top_cls : type
        Its top (``top_cls(program, spec)``, with a ``pll`` member).
    make_platform : callable
        Returns its amaranth platform.
    build_dir : path-like
        The build goes to ``build_dir/<board>/`` (``top.bin`` / ``top.bit``, logs, reports).
    clock_mhz : float, optional
        Core clock (default the board's ``core_mhz``); the PLL gets as close as it can.
    allow_timing_fail : bool
        Keep a bitstream whose Fmax misses the core clock (for measurements) instead of raising.

    Returns
    -------
    BuildResult

    Raises
    ------
    BoardError
        If a tool fails (the message names the step and the log to read).
    """
    say = log or (lambda msg: None)
    out_dir = Path(build_dir).resolve() / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if clock_mhz:
        spec = replace(spec, core_mhz=float(clock_mhz))
    try:
        top = top_cls(program, spec)
        uart_divisor(top.pll.f_out, spec.baud)          # the baud rate at that clock
    except ValueError as exc:
        raise BoardError(f"{spec.name} at {spec.core_mhz:g} MHz: {exc}") from None
    plat = make_platform()
    device = DEVICES[spec.device]
    overrides = {"nextpnr_opts": "--report top.report.json --seed 1 --timing-allow-fail",
                 # where every multiplier goes (cnnforge.boards.synth.analyze reads the dump)
                 "script_after_read": "hierarchy -top top\nproc\nflatten\nwreduce\n"
                                      f"opt_clean\n{ONE_HOT_FSMS}\n"
                                      "tee -q -o pre_mul.txt dump t:$mul"}
    # (amaranth's synth_ice40 / synth_ecp5 without options: cnnforge.boards.synth.SYNTH_ICE40)
    env = dict(os.environ)
    try:
        env.update(tool_env())
    except SynthError as exc:
        raise BoardError(str(exc)) from None
    say(f"{spec.name}: yosys, nextpnr and the packer in {out_dir}")
    (out_dir / "top.report.json").unlink(missing_ok=True)
    (out_dir / WEIGHTS_FILE).unlink(missing_ok=True)      # never one of another build
    plan = plat.prepare(top, name="top", **overrides)
    plan.files["top.il"] = undefined_collisions(plan.files["top.il"])
    plan.extract(out_dir)                     # the design, constraints and build script
    with open(out_dir / "build.log", "w") as logf:
        proc = subprocess.run(["sh", "build_top.sh"], cwd=out_dir, env=env, stdout=logf,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = [ln for ln in (out_dir / "build.log").read_text(errors="replace").splitlines()
                if ln.strip()]
        err = next((ln for ln in tail if ln.startswith("ERROR")), tail[-1] if tail else "")
        raise BoardError(f"bitstream build for {spec.name} failed: {err.strip()} "
                         f"(see {out_dir / 'build.log'}, top.tim, top.rpt)")
    bitstream = out_dir / f"top.{spec.bitstream}"
    if not bitstream.is_file():
        raise BoardError(f"the build finished but wrote no {bitstream}")
    try:
        check_yosys_log(out_dir / "top.rpt")
    except SynthError as exc:
        bitstream.unlink()
        raise BoardError(f"{spec.name}: {exc} (bitstream removed)") from None
    summary = pnr_summary(out_dir / "top.report.json", device)
    summary.update(analyze(out_dir / "pre_mul.txt", out_dir / "top.il", out_dir / "top.rpt",
                           device, summary.get("dsps")))
    core_mhz = top.pll.f_out / 1e6
    fmax = summary.get("fmax_mhz")
    if not allow_timing_fail and (fmax is None or fmax < core_mhz):
        raise BoardError(f"{spec.name}: timing not met, Fmax {fmax} MHz < the {core_mhz:g} MHz "
                         f"core clock (bitstream left in {bitstream}; build with a lower "
                         "--clock)")
    weights = None
    if program.config.spram_weights:
        weights = out_dir / WEIGHTS_FILE
        weights.write_bytes(weight_image(program))
    return BuildResult(bitstream=bitstream, weights=weights, board=spec.name,
                       array=[program.config.rows, program.config.cols],
                       core_mhz=core_mhz, summary=summary,
                       seconds=time.perf_counter() - t0)


def summary_line(result, rows, cols, seconds):
    """The one line ``cnnforge build`` prints after a build.

    Parameters
    ----------
    result : BuildResult
    rows, cols : int
        The PE array the program was compiled for.
    seconds : float
        Wall time to report.

    Returns
    -------
    str
    """
    s = result.summary
    spram = (f", {s['spram']} of {s['spram_total']} SPRAM" if s.get("spram_total") else "")
    weights = f" and {result.weights}" if result.weights else ""
    return (f"wrote {result.bitstream}{weights}: {rows}x{cols} PE array at "
            f"{result.core_mhz:g} MHz, {s['luts']} of {s['luts_total']} LUTs, {s['dsps']} of "
            f"{s['dsps_total']} DSPs, {s['bram']} of {s['bram_total']} EBR{spram}, Fmax "
            f"{s['fmax_mhz']} MHz ({seconds:.0f} s)")


def board_main(spec, top_cls, make_platform, net=None):
    """``python -m cnnforge.boards.<board>``: build a network's bitstream for a board.

    The same build as ``cnnforge build NET --board <board>`` with the board's defaults (its
    array, buffer, algorithm and clock; the build goes to ``build/<board>/``), without the
    command line: load, quantize, compile (:meth:`BoardSpec.config`), :func:`build_board`.

    Parameters
    ----------
    spec, top_cls, make_platform
        The board, as for :func:`build_board`.
    net : path-like, optional
        The network (default: the bundled digits example, ``examples/digits/net.py``).

    Returns
    -------
    int
        Exit status: 0, or 2 after printing ``cnnforge: error: ...`` for a user error.
    """
    try:
        qnet = quantize(load_network(net or DIGITS_NET))
        program, _ = fit_memories(qnet, spec.config(qnet), spec.device)
        t0 = time.perf_counter()
        result = build_board(program, spec, top_cls, make_platform, "build", log=print)
    except (BoardError, NetworkError, ConfigError) as exc:
        print(f"cnnforge: error: {exc}", file=sys.stderr)
        return 2
    print(summary_line(result, program.config.rows, program.config.cols,
                       time.perf_counter() - t0))
    return 0
