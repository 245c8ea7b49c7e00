"""Drainers: finished sums out of the PE array (OR) or out of the partial-sum buffer (IR, WR),
one per cycle, to the post-processor, with their output coordinates."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.common import Events, PingPong, bits, desc_layout, one_hot
from cnnforge.hw.rtl.pe_array import BeatControl

__all__ = ["OutputDrainer", "PartialSumBuffer", "meta_layout", "ppu_input_layout"]


def ppu_input_layout(acc_width):
    """One accumulator on its way to the post-processor: output channel ``ch``, output row
    ``oy`` and column ``ox`` (before pooling), ``valid`` (inside the layer's output)."""
    return data.StructLayout({"valid": 1, "acc": signed(acc_width), "ch": 16, "oy": 16,
                              "ox": 16})


def meta_layout(program):
    """A pass's (OR) or group's (IR, WR) output coordinates, as wide as the network needs
    (:meth:`~cnnforge.hw.compiler.program.Program.meta_widths`; the metadata FIFO and the
    drainers' copies are registers)."""
    return data.StructLayout(program.meta_widths())


class OutputDrainer(wiring.Component):
    """OR: the results of a finished pass, one every ``interval`` cycles, row-major over the
    pass's valid columns (``meta.c_last`` + 1 of C: a row's last column group may have fewer),
    with their coordinates from the pass's metadata.

    Parameters
    ----------
    rows, cols, acc_width : int
    meta, desc : StructLayout
    fm_addr_width : int
    interval : int
        Cycles per result (the post-processor's ``interval``, 1 or 2).
    narrow : bool
        Read only the pass's valid columns (``meta.c_last``: ``narrow_passes``); else all C.

    Members
    -------
    take : In(1)
        The array's ``done`` in an OR layer: the pass's results are in the PEs' result registers
        (they stay there for interval·R·(c_last + 1) cycles: the next pass cannot finish
        sooner, :func:`~cnnforge.hw.models.perf.or_pass_beats`).
    results : In(signed(acc_width)).array(rows).array(cols)
    meta, meta_take : In(meta_layout), Out(1)
        The head of the metadata FIFO and its read strobe.
    out : Out(ppu_input_layout)
        The accumulator of this cycle; ``row_addr`` its output row's address.
    active, passes_drained : Out(1), Out(8)
        Draining; passes drained in this layer (modulo 2^8).
    """

    FIELDS = ("M", "PHW")

    def __init__(self, rows, cols, acc_width, meta, desc, fm_addr_width, *, interval=1,
                 narrow=True):
        self._rows, self._cols, self._interval, self._narrow = rows, cols, interval, narrow
        self.EVENTS = {"obuf_writes": rows * cols, "obuf_reads": 1}
        super().__init__({
            "desc": In(desc_layout(desc, self.FIELDS)),
            "start": In(1), "take": In(1),
            "results": In(signed(acc_width)).array(cols).array(rows),
            "meta": In(meta), "meta_take": Out(1),
            "out": Out(ppu_input_layout(acc_width)), "row_addr": Out(fm_addr_width + 1),
            "active": Out(1), "passes_drained": Out(8),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, d = self._rows, self._cols, self.desc
        events = Events(m)
        r, c = Signal(range(max(2, R))), Signal(range(max(2, C)))
        meta = Signal.like(self.meta)
        # each row's result of the column read next, registered a cycle ahead (row_q, column
        # cn): a C-way multiplexer inside each row, then an R-way one, instead of an R·C-way
        # multiplexer across the array in front of the post-processor. cn is 0 between passes:
        # the take and the R·cols − 1 beats before the last advance it R·cols times, wrapping
        # after the pass's last valid column (c_last; at the take, the metadata's).
        cn = Signal(range(max(2, C)))
        if self._narrow:
            c_last = Signal.like(self.meta.c_last)
            cn_last = Mux(self.take, self.meta.c_last, c_last)
            m.d.sync += c_last.eq(cn_last)
        else:
            c_last = cn_last = Const(C - 1)
        row_q = [Signal(signed(len(self.results[0][0])), name=f"row_q{i}") for i in range(R)]
        advance = Signal()
        # the pass's last result (r = R − 1, c = c_last) this cycle, kept with r and c: the
        # compares are not in front of the row registers' enable (timing: UP5K)
        last = Signal()
        # with an interval of I > 1, each result is out in the first of its I cycles and the
        # position moves in the last (tick counts them)
        I = self._interval
        head = moves = Const(1)
        if I > 1:
            tick = Signal(range(I), name="tick")
            head, moves = tick == 0, tick == I - 1
        with m.If(self.take):
            m.d.comb += [self.meta_take.eq(1), advance.eq(1)]
            m.d.sync += [self.active.eq(1), r.eq(0), c.eq(0), meta.eq(self.meta),
                         self.row_addr.eq(self.meta.out_base),
                         last.eq((R == 1) & (cn_last == 0))]
            if I > 1:
                m.d.sync += tick.eq(0)
            events.count("obuf_writes", R * C)
        if I > 1:
            with m.Elif(self.active & ~moves):
                m.d.sync += tick.eq(tick + 1)
                with m.If(head):
                    events.count("obuf_reads")
        with m.Elif(self.active):
            if I > 1:
                m.d.sync += tick.eq(0)
            else:
                events.count("obuf_reads")
            m.d.comb += advance.eq(~last)
            with m.If(c == c_last):
                m.d.sync += [c.eq(0), r.eq(r + 1), self.row_addr.eq(self.row_addr + d.PHW),
                             last.eq((r == R - 2) & (c_last == 0))]
                with m.If(last):
                    m.d.sync += [self.active.eq(0),
                                 self.passes_drained.eq(self.passes_drained + 1)]
            with m.Else():
                m.d.sync += [c.eq(c + 1), last.eq((r == R - 1) & (c + 1 == c_last))]
        with m.If(advance):
            m.d.sync += cn.eq(Mux(cn == cn_last, 0, cn + 1))
            for i in range(R):
                m.d.sync += row_q[i].eq(Array(self.results[i][j] for j in range(C))[cn])
        with m.If(self.start):
            m.d.sync += self.passes_drained.eq(0)
        out = self.out
        m.d.comb += [out.ch.eq(meta.m0 + r), out.ox.eq(meta.ox0 + c), out.oy.eq(meta.oy),
                     out.acc.eq(Array(row_q)[r]),
                     out.valid.eq(self.active & head & (out.ch < d.M) & (out.ox < meta.x_end))]
        events.drive(self.events)
        return m


class PartialSumBuffer(wiring.Component):
    """IR and WR: the partial-sum buffer (C banks × 2 halves of ``depth`` sums) and its drainer.

    The array's column sums (``psums``, with ``psum_ctl``) are added to what the buffer holds
    (the first block of a group overwrites); after the last beat of a group's last block its half
    is complete and is drained, one sum per cycle: IR in (channel, pixel) order (word = channel,
    bank = pixel of the group), WR in (channel, pixel) order (bank = channel of the block, word =
    pixel of the tile). Draining one half overlaps accumulating into the other.

    Members
    -------
    start : In(1)
        The layer starts.
    psum_ctl, psums : In(BeatControl), In(signed(acc_width)).array(cols)
        The array's column sums and their beat control.
    meta, meta_ready, meta_take : In(meta_layout), In(1), Out(1)
        The head of the metadata FIFO (the group's coordinates).
    released : Out(2)
        One-hot: the half whose drain ended this cycle (the controller may fill it again).
    out : Out(ppu_input_layout)
    active, groups_drained : Out(1), Out(8)
    """

    FIELDS = ("df", "M", "OW")

    def __init__(self, cols, acc_width, depth, meta, desc):
        self._cols, self._depth = cols, depth
        self.EVENTS = {"obuf_reads": cols + 1, "obuf_writes": cols}
        super().__init__({
            "desc": In(desc_layout(desc, self.FIELDS)),
            "start": In(1),
            "psum_ctl": In(BeatControl), "psums": In(signed(acc_width)).array(cols),
            "meta": In(meta), "meta_ready": In(1), "meta_take": Out(1),
            "released": Out(2),
            "out": Out(ppu_input_layout(acc_width)),
            "active": Out(1), "groups_drained": Out(8),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def elaborate(self, platform):
        m = Module()
        C, depth, d = self._cols, self._depth, self.desc
        events = Events(m)
        acc_width = len(self.psums[0])
        ps_aw = bits(2 * depth - 1)
        ps_wr, ps_rd_acc, ps_rd_dr = [], [], []
        for c in range(C):
            mem = memory.Memory(shape=signed(acc_width), depth=2 * depth, init=[])
            m.submodules[f"psum{c}"] = mem
            wp = mem.write_port()
            ps_wr.append(wp)
            ps_rd_acc.append(mem.read_port(transparent_for=(wp,)))
            ps_rd_dr.append(mem.read_port())
        is_ir, is_wr = d.df == Dataflow.IR, d.df == Dataflow.WR

        # accumulate: column sums (aligned) + what the buffer holds
        pc = Signal(BeatControl)
        m.d.comb += [pc.eq(self.psum_ctl), pc.valid.eq(self.psum_ctl.valid & (is_ir | is_wr))]
        acc_j, acc_half = Signal(16), Signal()
        a_valid, a_first, a_addr, a_done = Signal(), Signal(), Signal(ps_aw), Signal()
        a_psums = [Signal(signed(acc_width), name=f"a_psum{c}") for c in range(C)]
        j = Mux(pc.swap, 0, acc_j)
        addr_now = Mux(acc_half, depth, 0) + j
        for c in range(C):
            m.d.comb += ps_rd_acc[c].addr.eq(addr_now)
        m.d.sync += [a_valid.eq(pc.valid), a_first.eq(pc.first), a_addr.eq(addr_now),
                     a_done.eq(0)]
        m.d.sync += [a_psums[c].eq(self.psums[c]) for c in range(C)]
        with m.If(pc.valid):
            m.d.sync += acc_j.eq(j + 1)
            with m.If(~pc.first):
                events.count("obuf_reads", C)
            events.count("obuf_writes", C)
        # the group is complete after the last beat of its last block
        last_of_group = Signal()
        a_done_half = Signal()
        m.d.comb += last_of_group.eq(pc.valid & pc.last & pc.tail)
        with m.If(last_of_group):
            m.d.sync += [a_done.eq(1), acc_half.eq(~acc_half), a_done_half.eq(acc_half)]
        for c in range(C):
            m.d.comb += [ps_wr[c].addr.eq(a_addr),
                         ps_wr[c].data.eq(Mux(a_first, a_psums[c],
                                              a_psums[c] + ps_rd_acc[c].data)),
                         ps_wr[c].en.eq(a_valid)]
        ready_set = Signal(2)
        with m.If(a_done):
            m.d.comb += ready_set.eq(one_hot(a_done_half))
        self._drain(m, events, is_ir, ps_rd_dr, ready_set)
        with m.If(self.start):
            m.d.sync += [acc_half.eq(0)]
        events.drive(self.events)
        return m

    def _drain(self, m, events, is_ir, ps_rd_dr, ready_set):
        """Drain one complete half: IR (channel o outer, pixel i inner), WR (channel o outer,
        pixel (row, col) inner)."""
        C, depth, d = self._cols, self._depth, self.desc
        m.submodules.group_ready = ready = PingPong()     # halves complete, not yet drained
        group_ready = ready.full
        half, o, i = Signal(), Signal(16), Signal(16)
        row, col = Signal(16), Signal(16)
        meta = Signal.like(self.meta)
        valid_d = Signal()
        bank_d = Signal(range(max(2, C)))
        info_d = Signal(data.StructLayout({"ch": 16, "oy": 16, "ox": 16}))
        last_ir = (o == d.M - 1) & (i == C - 1)
        last_wr = (o == C - 1) & (row == meta.rows - 1) & (col == meta.cols - 1)
        last = Mux(is_ir, last_ir, last_wr)
        m.d.comb += [ready.set.eq(ready_set),
                     ready.clr.eq(Mux(self.active & last, one_hot(half), 0))]
        m.d.sync += valid_d.eq(0)
        with m.If(~self.active & group_ready.bit_select(half, 1) & self.meta_ready
                  & (d.df != Dataflow.OR)):
            m.d.comb += self.meta_take.eq(1)
            m.d.sync += [self.active.eq(1), meta.eq(self.meta), o.eq(0), i.eq(0),
                         row.eq(0), col.eq(0)]
        with m.If(self.active):
            bank = Mux(is_ir, i, o)
            word = Mux(is_ir, o, i)
            for c in range(C):
                m.d.comb += ps_rd_dr[c].addr.eq(Mux(half, depth, 0) + word)
            events.count("obuf_reads")
            m.d.sync += [valid_d.eq(1), bank_d.eq(bank),
                         info_d.ch.eq(Mux(is_ir, o, meta.m0 + o)),
                         info_d.oy.eq(Mux(is_ir, meta.oy, meta.oy + row)),
                         info_d.ox.eq(Mux(is_ir, meta.ox0 + i, meta.ox0 + col))]
            with m.If(last):
                m.d.comb += self.released.eq(one_hot(half))
                m.d.sync += [self.active.eq(0), half.eq(~half),
                             self.groups_drained.eq(self.groups_drained + 1)]
            inner_end = Mux(is_ir, i == C - 1,
                            (row == meta.rows - 1) & (col == meta.cols - 1))
            with m.If(inner_end):
                m.d.sync += [o.eq(o + 1), i.eq(0), row.eq(0), col.eq(0)]
            with m.Else():
                m.d.sync += i.eq(i + 1)
                with m.If(col == meta.cols - 1):
                    m.d.sync += [col.eq(0), row.eq(row + 1)]
                with m.Else():
                    m.d.sync += col.eq(col + 1)
        with m.If(self.start):
            m.d.sync += [self.groups_drained.eq(0), half.eq(0)]
            m.d.comb += ready.clr.eq(0b11)
        ps_data = Array(port.data for port in ps_rd_dr)
        x_end = Mux(is_ir, meta.x_end, d.OW)
        out = self.out
        m.d.comb += [
            out.valid.eq(valid_d & (info_d.ch < d.M) & (info_d.ox < x_end)),
            out.acc.eq(ps_data[bank_d]), out.ch.eq(info_d.ch),
            out.oy.eq(info_d.oy), out.ox.eq(info_d.ox)]
