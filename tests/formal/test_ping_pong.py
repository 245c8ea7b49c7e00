"""Formal proofs of the ping-pong flags (``hw/rtl/common.py: PingPong``) and of a real user.

The contract of a double buffer: a half is never read while it is being written, never
overwritten before it has been read, and no filled half is lost or read twice. ``PingPong``
keeps the flags (``full ← (full | set) & ~clr``); its users keep the discipline: the producer
fills half ``p`` only while ``full[p]`` is low and sets it with its last write, the consumer
reads half ``c`` only while ``full[c]`` is high and clears it with its last read, and each
moves to the other half after a half (``TileLoader`` / ``Controller`` on the input tile buffer's
slots, ``WinogradInputTransform`` / ``WinogradCompute`` on the V buffer, ``PartialSumBuffer``'s
accumulator and drainer on its halves).

* :class:`PingPongProtocol`: the real ``PingPong`` between a producer and a consumer with that
  discipline, taking any number of cycles per half: proved for all time (k-induction).
* :class:`PsumHalves`: the real ``PartialSumBuffer`` (``hw/rtl/drain.py``), its group-ready
  flags driven by its own accumulator and drainer, with the controller's discipline modelled as
  in the accelerator (a group starts only in a half the drainer has released): a half is never
  marked complete while still complete, never released while not complete, and the
  accumulator never writes the half being drained or a complete one. Bounded (16 cycles: two
  groups through both halves, as a cover run shows): k-induction would need the drainer's
  loop counters, which are local to its ``elaborate``.
"""

import pytest
from amaranth.asserts import AnyConst, AnySeq
from amaranth.hdl import Array, Assert, Assume, Cover, Elaboratable, Module, Mux, Signal
from amaranth.lib import data

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.common import PingPong, one_hot
from cnnforge.hw.rtl.drain import PartialSumBuffer
from cnnforge.sim.formal import run_formal


class PingPongProtocol(Elaboratable):
    """``PingPong`` with a producer and a consumer that each take any number of cycles per
    half. Each filled half carries a sequence number, which the consumer checks."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.flags = pp = PingPong()
        full = pp.full
        p, writing, seq_w = Signal(), Signal(), Signal(3)      # producer: half, busy, count
        c, reading, seq_r = Signal(), Signal(), Signal(3)      # consumer
        tag = Array([Signal(3, name="tag0"), Signal(3, name="tag1")])   # what a half holds
        begin_w, end_w, begin_r, end_r = (AnySeq(1) for _ in range(4))
        # the producer starts a half only while it is empty, sets it with its last write
        with m.If(~writing & begin_w & ~full.bit_select(p, 1)):
            m.d.sync += writing.eq(1)
        with m.If(writing & end_w):
            m.d.comb += pp.set.eq(one_hot(p))
            m.d.sync += [writing.eq(0), p.eq(~p), tag[p].eq(seq_w), seq_w.eq(seq_w + 1)]
        # the consumer starts a half only once it is full, clears it with its last read
        with m.If(~reading & begin_r & full.bit_select(c, 1)):
            m.d.sync += reading.eq(1)
        with m.If(reading & end_r):
            m.d.comb += [pp.clr.eq(one_hot(c)),
                         Assert(tag[c] == seq_r)]            # the next half, not one lost
            m.d.sync += [reading.eq(0), c.eq(~c), seq_r.eq(seq_r + 1)]
        m.d.comb += [
            Assert((pp.set & full) == 0),                    # never set a full half
            Assert((pp.clr & ~full) == 0),                   # never clear an empty half
            Assert(~(writing & reading & (p == c))),          # never read a half being written
            Assert(~writing | ~full.bit_select(p, 1)),        # never overwrite an unread half
            Assert(~reading | full.bit_select(c, 1)),         # a half being read stays full
            # induction strengthening: the filled halves are the ones written and not read
            Assert((seq_w - seq_r)[:3] == full[0] + full[1]),
            Assert((p == c) == (full[0] == full[1])),
            Assert(~full.bit_select(c, 1) | (tag[c] == seq_r)),
            Assert(~full.bit_select(~c, 1) | (tag[~c] == (seq_r + 1)[:3])),
            Cover(seq_r == 5),                                # not vacuous: halves go round
        ]
        return m


@pytest.mark.parametrize("mode", ["prove", "cover"])
def test_ping_pong_protocol(mode):
    result = run_formal(PingPongProtocol(), mode=mode, depth=4 if mode == "prove" else 16,
                        name=f"ping_pong_protocol_{mode}")
    assert result.passed, result.summary()


#: Small widths: the drainer's loop ends depend on M, rows and cols only.
PSUM_DESC = data.StructLayout({"df": 3, "M": 3, "OW": 3})
PSUM_META = data.StructLayout({"m0": 3, "oy": 3, "ox0": 3, "x_end": 3, "rows": 2, "cols": 2,
                               "out_base": 3})
PSUM_DEPTH = 4
#: Cycles of the bounded check: two groups through both halves, one accumulating while the
#: other drains (the covers show it), in about 2 s (20 cycles take 15 s).
PSUM_BOUND = 16


class PsumHalves(Elaboratable):
    """``PartialSumBuffer`` (one column, ``PSUM_DEPTH`` words a half) fed as the accelerator
    feeds it. The controller's discipline (``Controller._stationary``): a group takes half ``h``
    of the accelerator's own ``PingPong`` (``psum_halves``) only while it is free, the drainer's
    ``released`` frees it, the group's metadata enters the FIFO as it starts. The array's beats
    of a group arrive after its start, in order, a block at most ``PSUM_DEPTH`` beats, the group
    ending with a ``last & tail`` beat. The checked flags are the drainer's ``group_ready``;
    the accumulator's writes and the drainer's reads are checked against each other."""

    def __init__(self, df):
        self.df = df

    def elaborate(self, platform):
        m = Module()
        dut = PartialSumBuffer(1, 2, PSUM_DEPTH, PSUM_META, PSUM_DESC)
        dut._MustUse__silence = True        # elaborated here, to reach its flags and memory
        m.submodules.dut = inner = dut.elaborate(platform)
        flags = inner.submodules.group_ready
        mem = inner.submodules.psum0
        write, drain = mem.write_ports[0], mem.read_ports[1]
        m.d.comb += [dut.desc.df.eq(self.df), dut.desc.M.eq(AnyConst(3)),
                     dut.desc.OW.eq(AnyConst(3)), dut.start.eq(0), dut.psums[0].eq(AnySeq(2))]
        m.d.comb += Assume(dut.desc.M >= 1)
        if self.df == Dataflow.IR:
            m.d.comb += Assume(dut.desc.M <= PSUM_DEPTH)
        # the controller: groups into free halves of psum_halves, metadata into the FIFO
        m.submodules.halves = halves = PingPong()
        half, pending, queued = Signal(), Signal(2), Signal(2)
        begin = Signal()
        m.d.comb += [begin.eq(AnySeq(1) & ~halves.full.bit_select(half, 1)),
                     halves.set.eq(Mux(begin, one_hot(half), 0)), halves.clr.eq(dut.released)]
        meta = Signal(PSUM_META)
        m.d.comb += [meta.eq(AnySeq(PSUM_META.size)), dut.meta.eq(meta),
                     dut.meta_ready.eq(queued != 0),
                     Assume((meta.rows >= 1) & (meta.cols >= 1)
                            & (meta.rows * meta.cols <= PSUM_DEPTH))]
        m.d.sync += [half.eq(half ^ begin),
                     queued.eq(queued + begin - dut.meta_take)]
        # the array: beats only for started groups, a block at most PSUM_DEPTH beats
        ctl = dut.psum_ctl
        beat_j = Signal(range(PSUM_DEPTH + 1))
        m.d.comb += [ctl.eq(AnySeq(len(ctl.as_value()))),
                     Assume(~ctl.valid | (pending != 0)),
                     Assume(~ctl.valid | ctl.swap | (beat_j < PSUM_DEPTH))]
        ends = ctl.valid & ctl.last & ctl.tail
        with m.If(ctl.valid):
            m.d.sync += beat_j.eq(Mux(ctl.swap, 1, beat_j + 1))
        m.d.sync += pending.eq(pending + begin - ends)
        # the flags' contract, and the two sides kept apart
        write_half, drain_half = write.addr >= PSUM_DEPTH, drain.addr >= PSUM_DEPTH
        m.d.comb += [
            Assert((flags.set & flags.full) == 0),        # a complete half is not completed again
            Assert((flags.clr & ~flags.full) == 0),       # only a complete half is released
            Assert(~(write.en & dut.active & (write_half == drain_half))),
            Assert(~write.en | ~flags.full.bit_select(write_half, 1)),
            # reachable: both halves drained, accumulating while draining
            Cover(dut.released == 0b10),
            Cover(write.en & dut.active & (dut.groups_drained == 1)),
        ]
        return m


@pytest.mark.parametrize("df", [Dataflow.IR, Dataflow.WR], ids=["ir", "wr"])
@pytest.mark.parametrize("mode", ["bmc", "cover"])
def test_psum_halves(df, mode):
    """``bmc``: the assertions hold for ``depth`` cycles; ``cover``: within them both halves
    have been drained and accumulation overlapped a drain, so the bound is not vacuous."""
    result = run_formal(PsumHalves(df), mode=mode, depth=PSUM_BOUND,
                        name=f"psum_halves_{df.name}_{mode}")
    assert result.passed, result.summary()
