"""Fault test of the accelerator's reset: ``rst`` asserted in the middle of an
inference, then the next images classify correctly.

The design is the generated :class:`~cnnforge.hw.rtl.accelerator.Accelerator` Verilog of the
bundled digits network on Verilator. One simulator run per reset point:

1. after the power-on reset, image B (and C) undisturbed: the reference cycle count and debug
   dump;
2. image A streamed in while every output beat is taken, and ``rst`` asserted for 1 to 3 cycles
   at the reset point: the beats each stream had moved by then say which phase it hit;
3. the engine must then be idle (taking image beats, offering no output beat);
4. B and C again: their logits (and their debug dumps, when the point runs with ``debug``) equal
   the golden model (:func:`cnnforge.sim.golden.run_quantized`) bit for bit, and B's cycle
   counter and dump equal the undisturbed run's, counters included: the reset left no state
   behind.

The reset points sit in the middle of a phase of the image on the performance model's clock
(:func:`cnnforge.hw.models.perf.network_model`: each layer's cycles, plus the sequencer's load,
dump and output rates): while the image loads, mid-layer, mid-way through a layer's debug record
and while the logits drain. The test ids name them.

This module holds both halves, as ``tests/boards/test_top.py``: the cocotb test
(``tb_reset_mid_inference``, run inside the simulator, which imports this module as
``tests.sim.test_faults``) and the pytest tests that build and run it.
"""

from dataclasses import dataclass

import cocotb
import numpy as np
import pytest
from cocotb.triggers import RisingEdge

from cnnforge.sim import runner as sr

TOPLEVEL = "accelerator"
QUIET_CYCLES = 64
"""Cycles after the reset during which the engine must offer no output beat."""


# ------------------------------------------------------------------------------------------------
# cocotb side


def _ports(dut):
    return (sr.StreamPort.of(dut, "i_image"), sr.StreamPort.of(dut, "o_logits"),
            sr.StreamPort.of(dut, "o_debug"))


async def _infer(dut, name, image, n_logits, n_debug, timeout):
    """One image in, its logits (and ``n_debug`` debug bytes) out, then the cycle counter.
    Call right after a rising edge; returns right after the edge of the last logit. A stream
    that stops for ``timeout`` cycles fails the test, naming the image (``name``)."""
    i_image, o_logits, o_debug = _ports(dut)
    # the logits wait longer than the dump: the stream that stalls first is the one reported
    logits = cocotb.start_soon(sr.recv_stream(dut.clk, o_logits, n_logits, signed=True,
                                              timeout_cycles=2 * timeout if n_debug else timeout))
    dump = (cocotb.start_soon(sr.recv_stream(dut.clk, o_debug, n_debug, timeout_cycles=timeout))
            if n_debug else None)
    await sr.send_stream(dut.clk, i_image, image)
    try:
        out = {"debug": await dump if dump else [], "logits": await logits}
    except TimeoutError as exc:
        raise AssertionError(f"image {name}: the engine stalled ({exc})") from None
    out["cycles"] = int(dut.cycles.value)
    return out


async def _interrupt(dut, image, at, hold):
    """Stream ``image`` in (one beat per cycle while ``i_image.ready``) and take every output
    beat for ``at`` cycles, then hold ``rst`` high for ``hold`` cycles with every ``valid`` and
    ``ready`` low. Returns the beats each stream moved before the reset."""
    i_image, o_logits, o_debug = _ports(dut)
    moved = {"image": 0, "logits": 0, "debug": 0}
    edge = RisingEdge(dut.clk)
    o_logits.ready.value = o_debug.ready.value = 1
    for _ in range(at):
        sending = moved["image"] < len(image)
        i_image.valid.value = int(sending)
        if sending:
            i_image.payload.value = int(image[moved["image"]])
        await edge
        moved["image"] += int(sending and i_image.ready.value == 1)
        moved["logits"] += int(o_logits.valid.value == 1)
        moved["debug"] += int(o_debug.valid.value == 1)
    i_image.valid.value = o_logits.ready.value = o_debug.ready.value = 0
    await sr.reset(dut.clk, dut.rst, hold)
    return moved


async def _quiet(dut, cycles):
    """Take every output beat for ``cycles`` cycles with no image offered: the output beats seen
    and the cycles ``i_image.ready`` was low (an idle engine: none and none)."""
    i_image, o_logits, o_debug = _ports(dut)
    edge = RisingEdge(dut.clk)
    o_logits.ready.value = o_debug.ready.value = 1
    stray, busy = 0, 0
    for _ in range(cycles):
        await edge
        stray += int(o_logits.valid.value == 1) + int(o_debug.valid.value == 1)
        busy += int(i_image.ready.value == 0)
    o_logits.ready.value = o_debug.ready.value = 0
    return stray, busy


@cocotb.test()
async def tb_reset_mid_inference(dut):
    """Images B and C undisturbed; A cut by a reset at the stimulus' cycle; B and C again."""
    stim = sr.load_stimulus()
    a, b, c = (np.asarray(image, np.int8).reshape(-1) for image in stim["images"])
    debug = int(stim["debug"])
    n_logits, n_debug = int(stim["output_size"]), int(stim["debug_size"]) if debug else 0
    timeout = int(stim["timeout_cycles"])
    sr.start_clock(dut.clk)
    i_image, o_logits, o_debug = _ports(dut)
    i_image.valid.value = o_logits.ready.value = o_debug.ready.value = 0
    dut.debug.value = debug
    await sr.reset(dut.clk, dut.rst, 3)
    clean = [await _infer(dut, f"{name} (undisturbed)", image, n_logits, n_debug, timeout)
             for name, image in (("B", b), ("C", c))]
    moved = await _interrupt(dut, a, int(stim["at"]), int(stim["hold"]))
    stray, busy = await _quiet(dut, QUIET_CYCLES)
    after = [await _infer(dut, f"{name} after the reset", image, n_logits, n_debug, timeout)
             for name, image in (("B", b), ("C", c))]
    sr.save_results({"clean": clean, "moved": moved, "stray": stray, "busy": busy,
                     "after": after})


# ------------------------------------------------------------------------------------------------
# pytest side


@dataclass(frozen=True)
class ResetPoint:
    """Where a reset lands in image A: the middle of ``phase`` (``"load"``, ``"compute"``,
    ``"dump"``, ``"logits"``) of layer ``layer`` (compute and dump), with the debug dump on or
    off, ``rst`` held ``hold`` cycles."""

    phase: str
    layer: int = 0
    debug: bool = False
    hold: int = 1

    @property
    def id(self):
        where = f"layer{self.layer}-{self.phase}" if self.phase in ("compute", "dump") \
            else self.phase
        return f"{where}-rst{self.hold}" + ("-debug" if self.debug else "")


POINTS = [
    ResetPoint("load", hold=1),                            # half the image's beats taken
    ResetPoint("compute", 0, debug=True, hold=2),          # first conv (OR), mid-layer
    ResetPoint("compute", 1, hold=3),                      # second conv (OR)
    ResetPoint("dump", 1, debug=True, hold=1),             # mid-way through layer 1's record
    ResetPoint("compute", 2, debug=True, hold=2),          # the Linear layer (WR)
    ResetPoint("logits", hold=3),                          # logits half drained
    ResetPoint("logits", debug=True, hold=1),
]


def phases(program, debug):
    """The phases of one image on the performance model's clock: ``{(phase, layer): (start,
    cycles)}``, counted from the cycle the image's first beat is offered (the engine takes one
    beat per cycle). A layer takes its modelled cycles plus 3 of sequencing
    (:func:`~cnnforge.hw.models.perf.network_model`); with ``debug`` its record follows (the
    sequencer sends a counter byte every 2 cycles and a feature-map byte every 3); the logits
    leave one every 3 cycles."""
    from cnnforge.hw.models.perf import network_model
    from cnnforge.hw.rtl.common import COUNTERS

    layers, _ = network_model(program)
    out = {("load", 0): (0, program.image_size)}
    t = program.image_size
    for k, (layer, lm) in enumerate(zip(program.layers, layers)):
        out[("compute", k)] = (t, lm.cycles + 3)
        t += lm.cycles + 3
        if debug:
            dump = 2 * 4 * len(COUNTERS) + 3 * layer.values["out_size"]
            out[("dump", k)] = (t, dump)
            t += dump
    out[("logits", 0)] = (t, 3 * program.output_size)
    return out


@pytest.fixture(scope="module")
def accel_build():
    """The digits network on a 4x4 array, the convs on the OR dataflow (4x2 and 2x1 tiles,
    double-buffered), the Linear layer weight-stationary (WR: the partial-sum buffer), so that
    a reset hits both kinds of drain; its Verilog built once. Three test images (A, B, C) and
    their golden logits."""
    from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize
    from cnnforge.hw.models.dataflow import Dataflow
    from cnnforge.hw.rtl.accelerator import Accelerator
    from cnnforge.sim.golden import run_quantized

    from tests.boards import digits_net
    from tests.helpers import build_dir

    network = load_network(digits_net())
    qnet = quantize(network)
    program = compile_network(qnet, AcceleratorConfig(4, 4), dataflows={"7": "wr"})
    assert [layer.values["df"] for layer in program.layers] == [Dataflow.OR, Dataflow.OR,
                                                                Dataflow.WR]
    directory = build_dir("faults-digits-4x4")
    src = sr.write_verilog(Accelerator(program), directory / f"{TOPLEVEL}.v", name=TOPLEVEL)
    runner = sr.build([src], TOPLEVEL, directory / "sim_build")
    x, _ = network.test_data()
    images = qnet.quantize_input(x[:3])
    golden = run_quantized(qnet, images)[-1].reshape(len(images), -1)
    return program, runner, directory, images, golden


def test_reset_points_are_in_their_phases(accel_build):
    """Every reset point exists in the model's timeline, and the phases follow one another."""
    program = accel_build[0]
    for debug in (False, True):
        spans = sorted(phases(program, debug).values())
        assert all(s + n == s2 for (s, n), (s2, _) in zip(spans, spans[1:]))
        assert all(n > 4 for _, n in spans)              # a middle to land in
    for point in POINTS:
        assert (point.phase, point.layer) in phases(program, point.debug), point.id


def landing(program, point, at):
    """The beats each stream has moved before a reset at cycle ``at`` that hits ``point``'s
    phase: ``{stream: (least, most)}``."""
    from cnnforge.sim.rtl import debug_record_sizes

    records = np.cumsum([0, *debug_record_sizes(program)]) * point.debug
    before, n_in = int(records[point.layer]), program.image_size
    return {
        "load": {"image": (at, min(at, n_in - 1)), "debug": (0, 0), "logits": (0, 0)},
        "compute": {"image": (n_in, n_in), "debug": (before, before), "logits": (0, 0)},
        "dump": {"image": (n_in, n_in), "debug": (before + 1, int(records[point.layer + 1]) - 1),
                 "logits": (0, 0)},
        "logits": {"image": (n_in, n_in), "debug": (int(records[-1]),) * 2,
                   "logits": (1, program.output_size - 1)},
    }[point.phase]


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.id)
def test_reset_mid_inference(accel_build, point):
    """A reset in the middle of image A (the point's phase): the engine is idle right after it,
    and B and C then classify bit-exactly, B in the undisturbed run's cycles with its dump."""
    from cnnforge.hw.models.perf import network_model
    from cnnforge.sim.rtl import debug_stream_size, split_debug_stream

    from tests.helpers import check_result

    program, runner, directory, images, golden = accel_build
    start, length = phases(program, point.debug)[(point.phase, point.layer)]
    at = start + length // 2
    _, per_image = network_model(program)
    debug_size = debug_stream_size(program)
    timeout = 4 * (per_image + program.image_size + 3 * debug_size) + 1000
    ex = sr.Exchange.create(directory, f"reset-{point.id}", {
        "images": images, "debug": int(point.debug), "at": at, "hold": point.hold,
        "output_size": program.output_size, "debug_size": debug_size,
        "timeout_cycles": timeout})
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_reset_mid_inference", extra_env=ex.env(),
           name=f"reset-{point.id}")
    got = ex.read_results()

    moved = got["moved"]
    assert all(lo <= moved[name] <= hi for name, (lo, hi) in landing(program, point, at).items()), \
        f"the reset at cycle {at} missed {point.id}: beats moved before it {moved}"
    # right after the reset the engine is idle: no output beat of A, image beats taken
    assert got["stray"] == 0, f"{got['stray']} output beats of the interrupted image"
    assert got["busy"] == 0, f"i_image.ready low in {got['busy']} cycles after the reset"

    clean, after = got["clean"], got["after"]
    for what, run in (("undisturbed", clean), ("after the reset", after)):
        logits = np.array([r["logits"] for r in run], np.int64)
        assert np.array_equal(logits, golden[1:]), \
            f"{what}: logits of B and C differ from the golden model:\n{logits}\n{golden[1:]}"
    assert [r["cycles"] for r in after] == [r["cycles"] for r in clean], \
        "the cycle counts differ from the undisturbed run's"
    if point.debug:
        assert after[0]["debug"] == clean[0]["debug"], "B's debug dump changed after the reset"
        layers = [split_debug_stream(program, r["debug"]) for r in after]
        check_result(program, images[1:], np.array([r["logits"] for r in after]), layers,
                     [r["cycles"] for r in after])
