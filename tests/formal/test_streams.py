"""Formal proofs of the stream handshakes (``amaranth.lib.stream``, see
:mod:`tests.formal.properties`) of the host link and of the FIFOs between engine units.

* :class:`ImageBufferSpec` (``boards/hostlink.py: ImageBuffer``): ``o`` holds ``valid`` and
  ``payload`` until ``ready``; every ``start`` sends exactly ``image_size`` beats, byte ``k``
  from address ``k``, and ``busy`` falls with the last one. Proved (k-induction).
* :class:`ResponderSpec` (``boards/hostlink.py: Responder``): ``o`` holds ``valid`` and
  ``payload`` until ``ready`` given a ``logits`` producer that does (proved, k-induction);
  a result frame takes exactly ``output_size`` logits and sends ``output_size + 11`` bytes, an
  error frame 7 (bounded: 19 cycles, in which a cover run completes a frame of each kind).
* :class:`FifoSpec`: ``amaranth.lib.fifo.SyncFIFOBuffered`` wired as ``WinogradCompute.group``
  wires it (``w_en = valid``, ``ready = w_rdy``; the read side as a stream): no beat is created
  or lost (beats in − beats out = ``level`` ≤ ``depth``) and the read side holds its beat.
  Proved (k-induction).
* A deliberately broken producer (an ``ImageBuffer`` that withdraws ``valid`` after one stalled
  cycle) fails the same handshake property, at that property's source line.
"""

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Assert, Assume, Cover, Elaboratable, Module, Mux, Signal
from amaranth.lib import fifo, stream

from cnnforge.boards.hostlink import ImageBuffer, Request, Responder
from cnnforge.sim.formal import run_formal
from tests.formal.properties import count_beats, hold_until_ready, location

IMAGE_SIZE = 3
#: the banked form's image: more bytes than its FIFO holds (6 entries with several banks)
BANKED_IMAGE_SIZE = 9


class LeakyImageBuffer(ImageBuffer):
    """A broken producer: withdraws ``valid`` after one cycle without ``ready``."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(self.o.valid & ~self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class ImageBufferSpec(Elaboratable):
    """``ImageBuffer(size, bank_words)`` under its contract: ``start`` only while not
    ``busy``, no write while ``busy``, any ``ready``. The direct form: byte k read from
    address k; the banked form: its FIFO never written while full (the credits)."""

    def __init__(self, dut_class=ImageBuffer, bank_words=None):
        self.size = IMAGE_SIZE if bank_words is None else BANKED_IMAGE_SIZE
        self.dut = dut_class(self.size, bank_words)
        self.handshake = ()

    def _internal(self, m, inner):
        """The form's own assertion: the direct form's read address, the banked form's FIFO."""
        dut = self.dut
        if dut.bank_words is None:
            rd = inner.submodules.image.read_ports[0]
            sent_next = self.sent + (dut.o.valid & dut.o.ready)
            return Assert(rd.addr == Mux(dut.busy, sent_next, 0))
        reads, size = dut.reads, self.size
        queued = reads.fifo.level + sum(reads.in_flight)
        issued = Mux(reads.issuing, reads.next_addr, size)
        return [Assert(~reads.fifo.w_en | reads.fifo.w_rdy),
                # the invariant that makes it inductive: every credit is free, or a byte on its
                # way or queued; the bytes read are those sent, queued or on their way
                Assert(reads.credits + queued == dut.fifo_depth),
                Assert(~dut.busy | (self.sent + queued == issued)),
                Assert(reads.issuing | (reads.next_addr == 0)), Assert(reads.next_addr < size),
                Assert(dut.busy | ~reads.issuing & (queued == 0))]

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        dut._MustUse__silence = True        # elaborated here, to reach its memory and FIFO
        m.submodules.dut = inner = dut.elaborate(platform)
        m.d.comb += [dut.start.eq(AnySeq(1)), dut.w.en.eq(AnySeq(1)),
                     dut.w.addr.eq(AnySeq(len(dut.w.addr))), dut.w.data.eq(AnySeq(8)),
                     dut.o.ready.eq(AnySeq(1)),
                     Assume(~dut.start | ~dut.busy), Assume(~dut.w.en | ~dut.busy)]
        self.handshake = hold_until_ready(m, dut.o)
        size = self.size
        self.sent = sent = Signal(range(size + 1))     # beats sent since the last start
        was_busy = Signal()
        transfer = dut.o.valid & dut.o.ready
        m.d.sync += was_busy.eq(dut.busy)
        with m.If(dut.start):
            m.d.sync += sent.eq(0)
        with m.Elif(transfer):
            m.d.sync += sent.eq(sent + 1)
        m.d.comb += [
            Assert(sent <= size),                # never more beats than the image
            Assert(~dut.busy | (sent < size)),
            Assert(~(was_busy & ~dut.busy) | (sent == size)),   # nor fewer
            Assert(~dut.o.valid | dut.busy),
            # direct: byte k is read from address k (the read address runs one ahead on a
            # transfer); banked: no byte is lost to a full FIFO
            self._internal(m, inner),
            Cover(was_busy & ~dut.busy),
        ]
        return m


@pytest.mark.parametrize("mode", ["prove", "cover"])
@pytest.mark.parametrize("bank_words", [None, 2048, 4], ids=["direct", "one-bank", "three-banks"])
def test_image_buffer(mode, bank_words):
    spec = ImageBufferSpec(bank_words=bank_words)
    # (a cover run sends a whole image: its bytes come first_byte_cycles after start)
    cover_depth = spec.size + spec.dut.first_byte_cycles + 2
    result = run_formal(spec, mode=mode, depth=4 if mode == "prove" else cover_depth,
                        name=f"image_buffer_{bank_words}_{mode}")
    assert result.passed, result.summary()


def test_broken_handshake_fails():
    """The handshake property catches a producer that withdraws ``valid`` while stalled: the
    proof fails from the initial state (a real counterexample, with its trace) at the line of
    ``hold_until_ready``'s ``valid`` assertion."""
    spec = ImageBufferSpec(LeakyImageBuffer)
    result = run_formal(spec, mode="prove", depth=4, name="image_buffer_leaky")
    assert result.passed is False
    assert result.status == "FAIL", result.summary()
    valid_held, _ = spec.handshake
    assert location(valid_held) in result.locations, result.summary()
    failure = result.failures[result.locations.index(location(valid_held))]
    assert failure.trace is not None and failure.trace.exists()


OUTPUT_SIZE = 1


class ResponderSpec(Elaboratable):
    """``Responder(OUTPUT_SIZE)`` under its contract: a request only while not ``busy``,
    ``logits`` from a producer that keeps the stream rules, ``cycles`` stable (the engine's
    count does not change while its frame is answered), any ``tx_busy`` and ``o.ready``.

    With ``frames``, the frame lengths are checked too (a count against the state machine's
    position: bounded, not inductive)."""

    def __init__(self, frames=False):
        self.frames = frames

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = Responder(OUTPUT_SIZE)
        request = Signal(Request)
        m.d.comb += [request.eq(AnySeq(Request.size)), dut.request.payload.eq(request),
                     dut.request.valid.eq(AnySeq(1)), Assume(~dut.request.valid | ~dut.busy),
                     dut.logits.valid.eq(AnySeq(1)), dut.logits.payload.eq(AnySeq(8)),
                     dut.cycles.eq(AnyConst(32)), dut.tx_busy.eq(AnySeq(1)),
                     dut.o.ready.eq(AnySeq(1))]
        hold_until_ready(m, dut.logits, Assume, name="logits")
        hold_until_ready(m, dut.o, name="o")
        if self.frames:
            self._frames(m, dut)
        return m

    @staticmethod
    def _frames(m, dut):
        sent = count_beats(m, dut.o, 5, name="bytes_sent")
        taken = count_beats(m, dut.logits, 3, name="logits_taken")
        error, was_busy = Signal(), Signal()
        m.d.sync += was_busy.eq(dut.busy)
        with m.If(dut.request.valid):
            m.d.sync += [sent.eq(0), taken.eq(0), error.eq(dut.request.payload.error)]
        ended = was_busy & ~dut.busy
        m.d.comb += [
            Assert(~ended | (sent == Mux(error, 7, OUTPUT_SIZE + 11))),
            Assert(~ended | (taken == Mux(error, 0, OUTPUT_SIZE))),
            Assert(~dut.answered | ~error),
            Cover(ended & ~error), Cover(ended & error),
        ]


@pytest.mark.parametrize("mode", ["prove", "bmc"])
def test_responder(mode):
    """``prove``: the handshake of ``o``; ``bmc``: the frame lengths, over a result frame and
    an error frame (``cover`` checks the bound reaches both)."""
    frames = mode == "bmc"
    result = run_formal(ResponderSpec(frames), mode=mode, depth=6 if mode == "prove" else 19,
                        name=f"responder_{mode}")
    assert result.passed, result.summary()
    if frames:
        reached = run_formal(ResponderSpec(frames), mode="cover", depth=19,
                             name="responder_cover")
        assert reached.passed, reached.summary()


FIFO_DEPTH = 4


class FifoSpec(Elaboratable):
    """``SyncFIFOBuffered(depth=FIFO_DEPTH)`` between two streams, wired as
    ``WinogradCompute`` wires its group FIFO (``w_en = valid``, ``ready = w_rdy``), its read
    side offered as a stream (``valid = r_rdy``, ``payload = r_data``, ``r_en = ready``)."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=4, depth=FIFO_DEPTH)
        i, o = stream.Signature(4).create(), stream.Signature(4).flip().create()
        m.d.comb += [i.valid.eq(AnySeq(1)), i.payload.eq(AnySeq(4)), o.ready.eq(AnySeq(1)),
                     q.w_data.eq(i.payload), q.w_en.eq(i.valid), i.ready.eq(q.w_rdy),
                     o.valid.eq(q.r_rdy), o.payload.eq(q.r_data), q.r_en.eq(o.ready)]
        hold_until_ready(m, i, Assume, name="i")
        hold_until_ready(m, o, name="o")
        beats_in, beats_out = count_beats(m, i, 4, "beats_in"), count_beats(m, o, 4, "beats_out")
        m.d.comb += [Assert((beats_in - beats_out)[:4] == q.level), Assert(q.level <= FIFO_DEPTH),
                     Cover(q.level == FIFO_DEPTH)]
        return m


def test_fifo():
    result = run_formal(FifoSpec(), mode="prove", depth=6, name="fifo")
    assert result.passed, result.summary()
