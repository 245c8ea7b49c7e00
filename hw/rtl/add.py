"""Element-wise add (residual connections) as TFLite's int8 add computes it, through rescaling
tables: both inputs read in one cycle (feature-map ports A and B), each looked up in its table
(``(x − z)·2^left_shift`` rescaled to the common scale, :func:`cnnforge.sim.golden.add_rescale`),
the sum to the post-processor, which requantizes and clamps."""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.common import Events, desc_layout

__all__ = ["AddUnit"]


class AddUnit(wiring.Component):
    """Streams ``out_size`` element pairs from ``src`` and ``src2`` through the rescaling tables.

    Timing: reads in cycle t, table lookups in t + 1, the sum valid in t + 2 (``out``), with its
    element index (``index``).

    Parameters
    ----------
    tables : ndarray of int
        Every add layer's two 256-entry tables, concatenated (``Program.add_tables``); a layer's
        start is its ``t_base`` descriptor field.
    fm_depth, fm_addr_width : int
    sum_width : int
        Width of ``out_acc`` (the post-processor's input).

    Members
    -------
    start : In(1)
        The layer starts; the unit runs when the layer is an add.
    fm_en, fm_addr_a, fm_addr_b, fm_data_a, fm_data_b
        The feature-map reads (ports A and B) and their data, one cycle later.
    out_valid, out_acc, index : Out
    active, busy : Out(1)
        Reading; reading or a sum in flight.
    """

    FIELDS = ("df", "src", "src2", "t_base", "last_out_size")
    EVENTS = {"fm_reads": 2, "weight_reads": 2}

    def __init__(self, tables, fm_depth, fm_addr_width, sum_width, desc):
        self._tables = tables
        super().__init__({
            "desc": In(desc_layout(desc, self.FIELDS)),
            "start": In(1),
            "fm_en": Out(1), "fm_addr_a": Out(fm_addr_width), "fm_addr_b": Out(fm_addr_width),
            "fm_data_a": In(signed(8)), "fm_data_b": In(signed(8)),
            "out_valid": Out(1), "out_acc": Out(signed(sum_width)),
            "index": Out(range(max(2, fm_depth + 1))),
            "active": Out(1), "busy": Out(1),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.desc
        events = Events(m)
        i = Signal.like(self.index)
        i1 = Signal.like(self.index)
        v1 = Signal()
        m.d.sync += [v1.eq(0), self.out_valid.eq(v1), i1.eq(i), self.index.eq(i1)]
        with m.If(self.start):
            m.d.sync += [i.eq(0), self.active.eq(d.df == Dataflow.ADD)]
        with m.Elif(self.active):
            m.d.comb += [self.fm_en.eq(1), self.fm_addr_a.eq(d.src + i),
                         self.fm_addr_b.eq(d.src2 + i)]
            m.d.sync += [v1.eq(1), i.eq(i + 1)]
            events.count("fm_reads", 2)
            with m.If(i == d.last_out_size):
                m.d.sync += self.active.eq(0)

        tables = self._tables
        t_width = max(2, int(abs(tables).max()).bit_length() + 1)
        m.submodules.add_tables = rom = memory.Memory(
            shape=signed(t_width), depth=len(tables), init=[int(t) for t in tables])
        rd_a, rd_b = rom.read_port(), rom.read_port()
        # entry x + 128 of each table: the int8 value with its sign bit flipped
        m.d.comb += [rd_a.addr.eq(d.t_base + (self.fm_data_a.as_unsigned() ^ 0x80)),
                     rd_b.addr.eq(d.t_base + 256 + (self.fm_data_b.as_unsigned() ^ 0x80)),
                     self.out_acc.eq(rd_a.data + rd_b.data)]
        with m.If(v1):
            events.count("weight_reads", 2)
        m.d.comb += self.busy.eq(self.active | v1 | self.out_valid)
        events.drive(self.events)
        return m
