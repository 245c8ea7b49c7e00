"""The input tile buffer: banks × two ping-pong halves."""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.timing import tile_read_latency
from cnnforge.hw.rtl.common import NO_RW_CHECK

__all__ = ["TileBuffer"]


class TileBuffer(wiring.Component):
    """``banks`` memories of ``depth`` int8 words (two halves of ``depth / 2``: the loader fills
    one while the controller reads the other), one write and one read port each.

    Read data arrive ``latency`` cycles after their address
    (:func:`~cnnforge.hw.models.timing.tile_read_latency`): in the next cycle from a synchronous
    port (block RAM), or, with ``lutram``, two cycles later from an asynchronous read between a
    registered address and a registered output (distributed RAM: neither the controller's
    address arithmetic nor the bank rotation after the buffer is in the read's cycle). The
    loader never writes the half being read, so both read the same values.

    Members
    -------
    wr_en, wr_bank, wr_addr, wr_data : In
        One write per cycle, to bank ``wr_bank``.
    raddr : In(addr_width).array(banks)
    rdata : Out(signed(8)).array(banks)
    """

    def __init__(self, banks, depth, addr_width, lutram):
        self._banks, self._depth, self._lutram = banks, depth, lutram
        self.latency = tile_read_latency(lutram)
        aw = addr_width
        super().__init__({
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
            if self._lutram:
                rd = bank.read_port(domain="comb")
                raddr_q = Signal.like(self.raddr[b], name=f"ibuf{b}_raddr_q")
                m.d.sync += raddr_q.eq(self.raddr[b])
                m.d.comb += rd.addr.eq(raddr_q)
                m.d.sync += self.rdata[b].eq(rd.data)
            else:
                rd = bank.read_port()
                m.d.comb += [rd.addr.eq(self.raddr[b]), self.rdata[b].eq(rd.data)]
        return m
