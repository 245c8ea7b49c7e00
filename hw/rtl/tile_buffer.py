"""The input tile buffer: banks × two ping-pong halves."""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.timing import tile_read_latency
from cnnforge.hw.rtl.common import NO_RW_CHECK, delay

__all__ = ["TileBuffer"]


class TileBuffer(wiring.Component):
    """``banks`` memories of ``depth`` int8 words (two halves of ``depth / 2``: the loader fills
    one while the controller reads the other), one write and one read port each.

    Read data arrive ``latency`` cycles after their address
    (:func:`~cnnforge.hw.models.timing.tile_read_latency`): in the next cycle from a synchronous
    port (block RAM), or, with ``lutram``, two cycles later from an asynchronous read between a
    registered address and a registered output (distributed RAM: neither the controller's
    address arithmetic nor the bank rotation after the buffer is in the read's cycle), and
    with ``banked_weights`` registered until the banked weight ROM's word comes (five). The
    loader never writes the half being read, so both read the same values.

    With ``lanes`` = 2 a second write (``wr1_*``, the tile loader's lane 1) goes to another
    bank in the same cycle (each bank keeps one write port, its address and data taken from
    the lane that writes it).

    Members
    -------
    wr_en, wr_bank, wr_addr, wr_data : In
        One write per cycle, to bank ``wr_bank``.
    wr1_en, wr1_bank, wr1_addr, wr1_data : In
        Lane 1's write (``lanes`` = 2 only), never to ``wr_bank`` in the same cycle.
    raddr : In(addr_width).array(banks)
    rdata : Out(signed(8)).array(banks)
    """

    def __init__(self, banks, depth, addr_width, lutram, lanes=1, banked_weights=False):
        self._banks, self._depth, self._lutram = banks, depth, lutram
        self._lanes = lanes
        self.latency = tile_read_latency(lutram, banked_weights)
        aw = addr_width
        lane1 = {}
        if lanes > 1:
            lane1 = {"wr1_en": In(1), "wr1_bank": In(range(max(2, banks))), "wr1_addr": In(aw),
                     "wr1_data": In(signed(8))}
        super().__init__({
            **lane1,
            "wr_en": In(1), "wr_bank": In(range(max(2, banks))), "wr_addr": In(aw),
            "wr_data": In(signed(8)),
            "raddr": In(aw).array(banks), "rdata": Out(signed(8)).array(banks),
        })

    def elaborate(self, platform):
        m = Module()
        for b in range(self._banks):
            # the loader never writes the half being read
            bank = memory.Memory(shape=signed(8), depth=self._depth, init=[], attrs=NO_RW_CHECK)
            m.submodules[f"ibuf{b}"] = bank
            wr = bank.write_port()
            m.d.comb += [wr.addr.eq(self.wr_addr), wr.data.eq(self.wr_data),
                         wr.en.eq(self.wr_en & (self.wr_bank == b))]
            if self._lanes > 1:
                with m.If(self.wr1_en & (self.wr1_bank == b)):
                    m.d.comb += [wr.addr.eq(self.wr1_addr), wr.data.eq(self.wr1_data),
                                 wr.en.eq(1)]
            # (with banked weights: the data registered until the weights come)
            extra = self.latency - tile_read_latency(self._lutram)
            out = Signal.like(self.rdata[b], name=f"ibuf{b}_rdata") if extra else self.rdata[b]
            if self._lutram:
                rd = bank.read_port(domain="comb")
                raddr_q = Signal.like(self.raddr[b], name=f"ibuf{b}_raddr_q")
                m.d.sync += raddr_q.eq(self.raddr[b])
                m.d.comb += rd.addr.eq(raddr_q)
                m.d.sync += out.eq(rd.data)
            else:
                rd = bank.read_port()
                m.d.comb += [rd.addr.eq(self.raddr[b]), out.eq(rd.data)]
            if extra:
                m.d.comb += self.rdata[b].eq(delay(m, out, extra, f"ibuf{b}_rdata"))
        return m
