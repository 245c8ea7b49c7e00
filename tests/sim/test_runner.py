"""End-to-end check of :mod:`cnnforge.sim.runner` on a tiny real Amaranth design.

The design, ``Times3``, takes a ``stream.Signature(signed(8))`` and returns ``x * 3`` on a
``stream.Signature(signed(16))`` through a one-entry register. This one module holds all three
parts of the pattern the RTL tests use:

* the design (Amaranth),
* the cocotb testbenches (``@cocotb.test()`` functions; their names do not start with ``test``
  so pytest does not collect them; they run inside the simulator, which imports this module as
  ``tests.sim.test_runner``),
* the pytest tests, which export Verilog, build once with Verilator (``$SIM`` to change),
  exchange stimulus/results through files in the build directory and check the results.
"""

# No ``from __future__ import annotations`` here: it turns the ``In(...)``/``Out(...)`` member
# annotations of a wiring.Component into strings, and Amaranth then finds no signature members.
import json
import random
import time

import cocotb
import numpy as np
import pytest
from amaranth import Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.triggers import RisingEdge

from cnnforge.sim import runner as sr

TOPLEVEL = "times3"


class Times3(wiring.Component):
    """``o.payload = 3 * i.payload`` for every beat, through a one-entry output register.

    The register takes a new beat whenever it is empty or being emptied in the same cycle
    (``i.ready = o.ready | ~o.valid``), so it sustains one beat per cycle and holds its beat,
    ``valid`` and payload stable, under back-pressure.
    """

    i: In(stream.Signature(signed(8)))
    o: Out(stream.Signature(signed(16)))

    def elaborate(self, platform):
        m = Module()
        take = self.o.ready | ~self.o.valid
        m.d.comb += self.i.ready.eq(take)
        with m.If(take):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += self.o.payload.eq(self.i.payload * 3)
        return m


# ------------------------------------------------------------------------------------------------
# cocotb testbenches (run inside the simulator)


async def _start(dut):
    """Clock, idle inputs, reset; returns the clock right after the first edge out of reset."""
    clock = sr.start_clock(dut.clk, 10)
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    await sr.reset(dut.clk, dut.rst, cycles=2)
    return clock


@cocotb.test()
async def tb_stream_backpressure(dut):
    """Random input gaps and output back-pressure: every beat once, in order, equal to 3x."""
    stim = sr.load_stimulus()
    x = [int(v) for v in stim["x"]]
    expected = [int(v) for v in stim["expected"]]
    rng = random.Random(int(stim["seed"]))
    idle, stall = float(stim["idle"]), float(stim["stall"])
    await _start(dut)
    src, snk = sr.StreamPort.of(dut, "i"), sr.StreamPort.of(dut, "o")

    t0 = time.perf_counter()
    sender = cocotb.start_soon(sr.send_stream(dut.clk, src, x, idle=idle, rng=rng))
    got = await sr.recv_stream(dut.clk, snk, len(x), stall=stall, rng=rng, signed=True,
                               timeout_cycles=20 * len(x) + 100)
    wall = time.perf_counter() - t0
    send_cycles = await sender

    # Nothing more may come out: no duplicated beat left in the register.
    snk.ready.value = 1
    extra = 0
    for _ in range(4):
        await RisingEdge(dut.clk)
        extra += int(snk.valid.value)
    sr.save_results({"received": got, "send_cycles": send_cycles, "wall_s": wall,
                     "extra_beats": extra})
    assert extra == 0, f"{extra} beats after the last expected one"
    assert len(got) == len(expected)
    bad = [(k, g, e) for k, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not bad, f"{len(bad)} wrong beats, first (index, got, expected): {bad[:5]}"


@cocotb.test()
async def tb_helper_timing(dut):
    """The cycle-exact contracts of skip_cycles, wait_for and the sampling point."""
    from cocotb.simtime import get_sim_time

    clock = await _start(dut)
    # A beat offered now is latched at the next edge, so o.valid is first sampled high at the
    # second edge.
    dut.i__payload.value = -7
    dut.i__valid.value = 1
    waited = await sr.wait_for(clock, dut.o__valid, 1, timeout_cycles=10)
    assert waited == 2, waited
    assert dut.o__payload.value.to_signed() == -21
    # With ready low, the beat stays; i.ready is low (o.valid and not o.ready).
    dut.i__valid.value = 0
    t = get_sim_time(unit="ns")
    await sr.skip_cycles(clock, 5)
    assert get_sim_time(unit="ns") - t == 50
    assert dut.o__valid.value == 1 and dut.i__ready.value == 0
    await sr.skip_cycles(clock, 1)
    assert get_sim_time(unit="ns") - t == 60
    # A value that never comes times out.
    try:
        await sr.wait_for(clock, dut.i__ready, 1, timeout_cycles=7)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait_for did not time out")
    # Reads right after RisingEdge see the pre-edge value; a write made there is not latched
    # by that edge.
    dut.o__ready.value = 1
    await RisingEdge(dut.clk)           # beat leaves the register at this edge
    assert dut.o__valid.value == 1      # ... but the read is still the pre-edge value
    await RisingEdge(dut.clk)
    assert dut.o__valid.value == 0


@cocotb.test()
async def tb_cycle_rate(dut):
    """Simulated cycles per wall-clock second of a loop that touches every cycle."""
    stim = sr.load_stimulus()
    n, n_skip = int(stim["cycles"]), int(stim["skip_cycles"])
    clock = await _start(dut)
    clk, i_valid, i_payload, o_valid = dut.clk, dut.i__valid, dut.i__payload, dut.o__valid
    dut.o__ready.value = 1
    edge = RisingEdge(clk)
    seen = 0
    t0 = time.perf_counter()
    for k in range(n):            # one wake-up, one read and two writes per cycle
        await edge
        seen += int(o_valid.value)
        i_payload.value = (k & 0x7F) - 64
        i_valid.value = k & 1
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    await sr.skip_cycles(clock, n_skip)    # free-running hardware, Python off the path
    t_skip = time.perf_counter() - t0
    sr.save_results({"loop_cycles_per_s": n / t_loop, "skip_cycles_per_s": n_skip / t_skip,
                     "seen": seen})


@cocotb.test()
async def tb_deliberate_failure(dut):
    """Fails on purpose: the pytest side checks that run() reports it."""
    await _start(dut)
    assert dut.o__valid.value == 1, "deliberate failure: o.valid is low after reset"


# ------------------------------------------------------------------------------------------------
# pytest side


@pytest.fixture(scope="module")
def built():
    """Verilog export and Verilator (``$SIM``) build, once per module."""
    build_dir = sr.build_root() / "sim" / "test_runner"
    src = sr.write_verilog(Times3(), build_dir / f"{TOPLEVEL}.v", name=TOPLEVEL)
    text = src.read_text()
    for port in ("i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload",
                 "clk", "rst"):
        assert port in text, port
    t0 = time.perf_counter()
    runner = sr.build([src], TOPLEVEL, build_dir / "sim_build")
    build_s = time.perf_counter() - t0
    print(f"\n[runner] build of {TOPLEVEL}: {build_s:.2f} s")
    return runner, build_dir, build_s


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.4, 0.5), (0.1, 0.8)])
def test_stream_backpressure(built, idle, stall):
    runner, build_dir, _ = built
    seed = 1234 + int(idle * 10) * 100 + int(stall * 10)
    x = np.random.default_rng(seed).integers(-128, 128, size=300, dtype=np.int8)
    x[:4] = [-128, 127, 0, -1]
    expected = x.astype(np.int16) * 3
    ex = sr.Exchange.create(build_dir, f"backpressure_{idle}_{stall}",
                            {"x": x, "expected": expected, "seed": seed, "idle": idle,
                             "stall": stall})
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_stream_backpressure", extra_env=ex.env(),
           name=f"backpressure_{idle}_{stall}", seed=seed)
    res = ex.read_results()
    assert res["received"] == expected.tolist()
    assert res["extra_beats"] == 0
    if idle == 0.0 and stall == 0.0:  # full rate: one beat per cycle
        assert res["send_cycles"] == len(x)


def test_helper_timing(built):
    runner, _, _ = built
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_helper_timing", name="helper_timing")


def test_failure_is_reported(built):
    runner, _, _ = built
    with pytest.raises(AssertionError) as info:
        sr.run(runner, TOPLEVEL, __name__, testcase="tb_deliberate_failure", name="failure")
    msg = str(info.value)
    assert "1 of 1 cocotb tests failed" in msg
    assert "tb_deliberate_failure: FAILED" in msg
    assert "deliberate failure: o.valid is low after reset" in msg  # from the log tail
    # check=False hands back the file instead
    xml = sr.run(runner, TOPLEVEL, __name__, testcase="tb_deliberate_failure", name="failure",
                 check=False)
    assert [r.status for r in sr.read_results(xml)] == ["failed"]


def test_no_test_ran_is_an_error(built):
    runner, _, _ = built
    with pytest.raises(AssertionError, match="no cocotb test ran"):
        sr.run(runner, TOPLEVEL, __name__, testcase="tb_no_such_test", name="none")


def test_cycle_rate(built):
    runner, build_dir, build_s = built
    ex = sr.Exchange.create(build_dir, "cycle_rate", {"cycles": 20_000, "skip_cycles": 200_000},
                            fmt="json")
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_cycle_rate", extra_env=ex.env(),
           name="cycle_rate")
    res = ex.read_results()
    assert res["seen"] > 0
    res["build_s"] = build_s
    (build_dir / "timing.json").write_text(json.dumps(res, indent=1))
    print(f"\n[runner] per-cycle loop: {res['loop_cycles_per_s']:,.0f} cycles/s; "
          f"skip_cycles: {res['skip_cycles_per_s']:,.0f} cycles/s")


def test_exchange_roundtrip(tmp_path):
    a = np.arange(-5, 5, dtype=np.int8)
    ex = sr.Exchange.create(tmp_path, "rt", {"a": a})
    assert set(ex.env()) == {sr.STIMULUS_ENV, sr.RESULTS_ENV}
    back = sr.load_data(ex.stimulus)
    assert back["a"].dtype == np.int8 and (back["a"] == a).all()
    with pytest.raises(FileNotFoundError):
        ex.read_results()
    sr.save_data(ex.results, {"y": np.int16(3) * a, "n": np.int64(7)})
    assert ex.read_results() == {"y": (3 * a).tolist(), "n": 7}
