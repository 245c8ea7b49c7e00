"""Formal checks of the layer sequencer (``hw/rtl/sequencer.py: Sequencer``) on a real compiled
program (one fully connected layer: a 4-byte image, 2 logits).

* :class:`SequencerStreams`: ``o_logits`` and ``o_debug`` hold ``valid`` and ``payload`` until
  ``ready`` and are never valid together, whatever the units (``busy``), the feature map and
  the consumers do. Proved (k-induction).
* :class:`SequencerRoundTrip`: with an environment that answers (the image's beats always
  valid, the consumers always ready, the units idle as soon as they start), from reset the
  sequencer takes exactly ``image_size`` beats, sends exactly ``output_size`` logits (and with
  ``debug``, per layer the 32 counter bytes and the layer's output map), and is back waiting for
  the next image (``i_image.ready``) by a fixed bound: no state it passes through deadlocks.
  Bounded model check to that bound, for ``debug`` low and high.
"""

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Cover, Elaboratable, Module, Signal

from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.network import Flatten, Linear
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.rtl.common import COUNTERS, bits, descriptor_layout
from cnnforge.hw.rtl.sequencer import Sequencer
from cnnforge.sim.formal import run_formal
from tests.formal.properties import count_beats, hold_until_ready
from tests.helpers import make_network


#: Cycles of the bounded stream check: from reset through a stalled logit, with debug bytes.
STREAMS_BOUND = 30


def tiny_program():
    """One fully connected layer, 4 inputs → 2 outputs, on a 1×1 array."""
    qnet = quantize(make_network((1, 2, 2), [Flatten(), Linear(4, 2)], seed=1))
    return compile_network(qnet, AcceleratorConfig(1, 1))


def sequencer(program):
    return Sequencer(program, descriptor_layout(program), bits(program.fm_depth - 1))


def round_trip_cycles(program, debug):
    """Cycles from reset until the sequencer waits for the next image, when nothing stalls it:
    the image (a beat a cycle); per layer FETCH, START, KICK, two RUN cycles (idle is
    registered), NEXT, with ``debug`` the header (2 cycles a byte) and the map (3 a byte); the
    logits (3 cycles a byte: read, data, transfer)."""
    layers = program.layers
    dump = sum(2 * 4 * len(COUNTERS) + 3 * layer.values["out_size"] for layer in layers)
    return (program.image_size + 6 * len(layers) + (dump if debug else 0)
            + 3 * program.output_size)


class SequencerStreams(Elaboratable):
    def __init__(self, program):
        self.program = program

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = sequencer(self.program)
        for port in (dut.i_image.valid, dut.i_image.payload, dut.o_logits.ready,
                     dut.o_debug.ready, dut.busy, dut.ppu_wr_addr, dut.ppu_wr_data,
                     dut.ppu_wr_en, dut.fm_rd_data, *dut.counters):
            m.d.comb += port.eq(AnySeq(len(port)))
        m.d.comb += dut.debug.eq(AnyConst(1))
        hold_until_ready(m, dut.o_logits, name="logits")
        hold_until_ready(m, dut.o_debug, name="debug")
        m.d.comb += [Assert(~(dut.o_logits.valid & dut.o_debug.valid)),
                     Cover(dut.o_logits.valid & ~dut.o_logits.ready),
                     Cover(dut.o_debug.valid & ~dut.o_debug.ready)]
        return m


class SequencerRoundTrip(Elaboratable):
    def __init__(self, program, debug):
        self.program, self.debug = program, debug

    def elaborate(self, platform):
        m = Module()
        prog = self.program
        m.submodules.dut = dut = sequencer(prog)
        m.d.comb += [dut.i_image.valid.eq(1), dut.i_image.payload.eq(AnySeq(8)),
                     dut.o_logits.ready.eq(1), dut.o_debug.ready.eq(1), dut.busy.eq(0),
                     dut.debug.eq(self.debug), dut.fm_rd_data.eq(AnySeq(8)),
                     [c.eq(AnySeq(32)) for c in dut.counters]]
        bound = round_trip_cycles(prog, self.debug)
        cycle = Signal(range(bound + 2))
        with m.If(cycle != bound + 1):
            m.d.sync += cycle.eq(cycle + 1)
        image = count_beats(m, dut.i_image, 8, "image_beats")
        logits = count_beats(m, dut.o_logits, 8, "logit_beats")
        debug = count_beats(m, dut.o_debug, 8, "debug_beats")
        dump = sum(4 * len(COUNTERS) + layer.values["out_size"] for layer in prog.layers)
        done = ((image == prog.image_size) & (logits == prog.output_size)
                & (debug == (dump if self.debug else 0)) & dut.i_image.ready)
        m.d.comb += [Assert((cycle != bound) | done),
                     Assert((image <= prog.image_size) | (logits == prog.output_size)),
                     Cover(done)]
        return m


@pytest.mark.parametrize("mode", ["bmc", "cover"])
def test_sequencer_streams(mode):
    """Bounded: k-induction does not close without the state machine's state, which is not a
    port (``RUN`` would retarget an offered beat; only reachability rules that out). The bound
    covers an image, a layer, a stalled debug byte and a stalled logit (``cover``)."""
    result = run_formal(SequencerStreams(tiny_program()), mode=mode, depth=STREAMS_BOUND,
                        name=f"sequencer_streams_{mode}")
    assert result.passed, result.summary()


@pytest.mark.parametrize("debug", [0, 1], ids=["plain", "debug"])
def test_sequencer_round_trip(debug):
    program = tiny_program()
    depth = round_trip_cycles(program, debug) + 2
    result = run_formal(SequencerRoundTrip(program, debug), mode="bmc", depth=depth,
                        name=f"sequencer_round_trip_{debug}")
    assert result.passed, result.summary()
