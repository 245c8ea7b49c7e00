"""The tile loader: feature map → input tile buffer, one value per cycle, padding included."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.common import Events, counter, desc_layout, end_ahead, one_hot

__all__ = ["TileLoader"]


class TileLoader(wiring.Component):
    """Copies every input tile of a layer from the feature map into a free half of the input tile
    buffer, tile by tile in the order of :func:`cnnforge.hw.models.perf.tile_order` (tile rows
    outer, tile columns inner), element by element in (n, yi, xi) order. A tile is one load of
    its N channels, or for a depthwise layer ``ld_blocks`` loads, one per block of R channels
    (``ld_chans`` each, the last ``ld_chans_tail``), each into its own half (the controller runs
    a block's passes from it).

    Layouts (``docs/architecture.md``): x-banked for OR, IR and Winograd (bank ``(xi // S) % C``,
    word ``((n·Tr_in + yi)·S + xi % S)·Wq + (xi // S) // C``), channel-banked for WR and the
    depthwise row mapping (``banks_on_rows``; bank ``n % R``, word
    ``(n // R)·Tr_in·Tc_in + yi·Tc_in + xi``). Positions outside the map (padding) get the input
    zero point ``z_in``. An element-wise add loads nothing (``done`` at once).

    Timing: the feature map's read data arrive one cycle after ``fm_addr``; the value (or the
    padding) is registered once more before the buffer write, so the block RAM's clock-to-out is
    not in front of the write. A tile's half is marked full (``slot_set``) with its last write.

    Parameters
    ----------
    banks, rows, cols : int
        Tile-buffer banks, array rows R (channel-banked) and columns C (x-banked).
    slot_words : int
        Words of one ping-pong half of a bank.
    addr_width, fm_addr_width : int
        Tile-buffer and feature-map address bits.
    desc : StructLayout
        The network's descriptor layout.
    most : callable
        ``most(*fields)``: the largest value of descriptor fields over the network (counter
        widths).

    Members
    -------
    start : In(1)
        Pulse: the layer begins (its descriptor is valid from this cycle on).
    slot_full : In(2)
        Which halves of the buffer hold a tile not yet released by the controller.
    slot_set : Out(2)
        One-hot: the half whose last value was written this cycle.
    fm_en, fm_addr : Out(1), Out(fm_addr_width)
        The feature-map read (port A) the loader needs this cycle.
    fm_data : In(signed(8))
        Port A's data, one cycle after ``fm_addr``.
    wr_en, wr_bank, wr_addr, wr_data : Out
        The tile-buffer write of this cycle.
    done : Out(1)
        The layer's last tile has been read.
    events : Out
        ``fm_reads``, ``ibuf_writes`` of this cycle.
    """

    FIELDS = ("df", "banks_on_rows", "H", "W", "z_in", "ld_start", "y_start", "x_start",
              "ld_row_step", "ld_chan_step", "ld_tile_row_step", "ld_tile_col_step", "ld_blk_step",
              "tile_y_step", "tile_x_step", "Wq", "row_words", "chan_words", "last_Tc_in",
              "last_Tr_in", "last_ld_chans", "last_ld_chans_tail", "last_ld_blocks",
              "last_ntr", "last_ntc", "last_sw")
    EVENTS = {"fm_reads": 1, "ibuf_writes": 1}

    def __init__(self, banks, rows, cols, slot_words, addr_width, fm_addr_width, desc, most):
        self._banks, self._rows, self._cols = banks, rows, cols
        self._slot_words = slot_words
        self._most = {k: most(k) for k in ("ntr", "ntc", "ld_chans", "ld_blocks", "Tr_in",
                                           "Tc_in")}
        super().__init__({
            "desc": In(desc_layout(desc, self.FIELDS)),
            "start": In(1), "slot_full": In(2), "slot_set": Out(2),
            "fm_en": Out(1), "fm_addr": Out(fm_addr_width), "fm_data": In(signed(8)),
            "wr_en": Out(1), "wr_bank": Out(range(max(2, banks))), "wr_addr": Out(addr_width),
            "wr_data": Out(signed(8)),
            "done": Out(1),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def elaborate(self, platform):
        m = Module()
        d, most = self.desc, self._most
        events = Events(m)
        aw, fm_aw = len(self.wr_addr), len(self.fm_addr)
        # channel-banked (WR, the depthwise row mapping) or x-banked
        is_wr, is_add = d.banks_on_rows, d.df == Dataflow.ADD

        active, slot, loading = Signal(), Signal(), Signal()
        tr, tc = counter(most["ntr"], "tr"), counter(most["ntc"], "tc")
        blk = counter(most["ld_blocks"], "blk")
        # (named: a generator's signals get none, and the timing reports show them)
        row_fm, tile_fm, blk_fm, fm = (Signal(signed(fm_aw + 2), name=f"{n}fm")
                                       for n in ("row_", "tile_", "blk_", ""))
        y0, x0, y, x = (Signal(signed(16), name=n) for n in ("y0", "x0", "y", "x"))
        n, yi, xi = (counter(most["ld_chans"], "n"), counter(most["Tr_in"], "yi"),
                     counter(most["Tc_in"], "xi"))
        phase, bank, word = Signal(8), Signal(range(max(2, self._banks))), Signal(aw)
        phase_off, rowterm = Signal(aw), Signal(aw)
        # first write stage: address and control, with the feature map's read in flight
        lw_en, lw_bank, lw_addr = Signal(), Signal.like(self.wr_bank), Signal(aw)
        lw_inb, lw_last, lw_slot = Signal(), Signal(), Signal()

        inb = Signal()
        m.d.comb += inb.eq((y >= 0) & (y < d.H) & (x >= 0) & (x < d.W))
        # The tile's place among the layer's tiles, compared once and registered: tr, tc and
        # blk change only with a tile's last element, and a cycle waiting for a free half
        # always follows it, so the flags are current before the next tile's first element
        # (off the path from the descriptor to the counters' next values: timing).
        last_blk, last_tc, last_tile = Signal(), Signal(), Signal()
        m.d.sync += [last_blk.eq(blk == d.last_ld_blocks), last_tc.eq(tc == d.last_ntc),
                     last_tile.eq((tr == d.last_ntr) & (tc == d.last_ntc)
                                  & (blk == d.last_ld_blocks))]
        # whether xi, yi and n are at their last value, kept with the counters (each set from
        # the counter's next value: compares with bounds registered from the descriptor, which
        # is held from the layer's start), so that the element loop's decisions are one LUT
        last_x, last_y, last_n = Signal(), Signal(), Signal()
        ahead = {k: end_ahead(m, d[f"last_{k}"], k)
                 for k in ("Tc_in", "Tr_in", "ld_chans", "ld_chans_tail")}
        bound = {k: v[0] for k, v in ahead.items()}
        single = {k: v[1] for k, v in ahead.items()}
        n_single = Mux(last_blk, single["ld_chans_tail"], single["ld_chans"])
        n_bound = Mux(last_blk, bound["ld_chans_tail"], bound["ld_chans"])
        last_elem = last_x & last_y & last_n

        m.d.sync += [lw_en.eq(0), lw_last.eq(0)]
        with m.If(self.start):
            m.d.sync += [active.eq(~is_add), loading.eq(0), slot.eq(0), tr.eq(0), tc.eq(0),
                         blk.eq(0), row_fm.eq(d.ld_start), tile_fm.eq(d.ld_start),
                         blk_fm.eq(d.ld_start), y0.eq(d.y_start),
                         x0.eq(d.x_start), self.done.eq(is_add)]
        with m.Elif(active & ~loading):
            # wait for a free half of the buffer, then start the tile; the element loop's
            # registers are set in every waiting cycle (nothing reads them before the tile
            # starts), so the buffer's flag is in front of `loading` alone (timing)
            m.d.sync += [fm.eq(blk_fm), y.eq(y0), x.eq(x0), n.eq(0), yi.eq(0), xi.eq(0),
                         phase.eq(0), bank.eq(0), word.eq(0), phase_off.eq(0), rowterm.eq(0),
                         last_x.eq(single["Tc_in"]), last_y.eq(single["Tr_in"]),
                         last_n.eq(n_single)]
            with m.If(~self.slot_full.bit_select(slot, 1) & ~lw_en):
                m.d.sync += loading.eq(1)
        with m.Elif(loading):
            m.d.comb += [self.fm_en.eq(1), self.fm_addr.eq(fm)]
            with m.If(inb):
                events.count("fm_reads")
            m.d.sync += [lw_en.eq(1), lw_bank.eq(bank), lw_inb.eq(inb), lw_slot.eq(slot),
                         lw_addr.eq(Mux(slot, self._slot_words, 0) + rowterm + phase_off + word),
                         lw_last.eq(last_elem)]
            with m.If(~last_x):
                m.d.sync += [xi.eq(xi + 1), x.eq(x + 1), fm.eq(fm + 1),
                             last_x.eq(xi == bound["Tc_in"])]
                self._next_column(m, is_wr, phase, phase_off, bank, word)
            with m.Else():
                m.d.sync += [xi.eq(0), x.eq(x0), last_x.eq(single["Tc_in"])]
                with m.If(~last_y):
                    m.d.sync += [yi.eq(yi + 1), y.eq(y + 1), fm.eq(fm + d.ld_row_step),
                                 last_y.eq(yi == bound["Tr_in"])]
                with m.Else():
                    m.d.sync += [yi.eq(0), y.eq(y0), n.eq(n + 1), fm.eq(fm + d.ld_chan_step),
                                 last_y.eq(single["Tr_in"]), last_n.eq(n == n_bound)]
                self._next_row(m, is_wr, last_y, phase, phase_off, bank, word, rowterm)
            with m.If(last_elem):
                m.d.sync += [loading.eq(0), slot.eq(~slot)]
                with m.If(last_tile):
                    m.d.sync += [active.eq(0), self.done.eq(1)]
                with m.Elif(~last_blk):
                    m.d.sync += [blk.eq(blk + 1), blk_fm.eq(blk_fm + d.ld_blk_step)]
                with m.Elif(last_tc):
                    m.d.sync += [blk.eq(0), tc.eq(0), tr.eq(tr + 1),
                                 row_fm.eq(row_fm + d.ld_tile_row_step),
                                 tile_fm.eq(row_fm + d.ld_tile_row_step),
                                 blk_fm.eq(row_fm + d.ld_tile_row_step),
                                 x0.eq(d.x_start), y0.eq(y0 + d.tile_y_step)]
                with m.Else():
                    m.d.sync += [blk.eq(0), tc.eq(tc + 1),
                                 tile_fm.eq(tile_fm + d.ld_tile_col_step),
                                 blk_fm.eq(tile_fm + d.ld_tile_col_step),
                                 x0.eq(x0 + d.tile_x_step)]
        # in the WR layout the word is absolute (word), not an offset from rowterm
        addr_wr = Signal(aw)
        m.d.comb += addr_wr.eq(Mux(slot, self._slot_words, 0) + word)
        with m.If(loading & is_wr):
            m.d.sync += lw_addr.eq(addr_wr)

        # second write stage: the feature map's data (or the padding value) registered
        lw2_last, lw2_slot = Signal(), Signal()
        m.d.sync += [self.wr_en.eq(lw_en), self.wr_bank.eq(lw_bank), self.wr_addr.eq(lw_addr),
                     lw2_last.eq(lw_last), lw2_slot.eq(lw_slot),
                     self.wr_data.eq(Mux(lw_inb, self.fm_data, d.z_in))]
        with m.If(self.wr_en):
            events.count("ibuf_writes")
        with m.If(lw2_last):
            m.d.comb += self.slot_set.eq(one_hot(lw2_slot))
        events.drive(self.events)
        return m

    def _next_column(self, m, is_wr, phase, phase_off, bank, word):
        """Next xi of a row: WR continues the word; x-banked: next phase, else next bank."""
        d = self.desc
        with m.If(is_wr):
            m.d.sync += word.eq(word + 1)
        with m.Elif(phase == d.last_sw):
            m.d.sync += [phase.eq(0), phase_off.eq(0)]
            with m.If(bank == self._cols - 1):
                m.d.sync += [bank.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += bank.eq(bank + 1)
        with m.Else():
            m.d.sync += [phase.eq(phase + 1), phase_off.eq(phase_off + d.Wq)]

    def _next_row(self, m, is_wr, last_y, phase, phase_off, bank, word, rowterm):
        """Next row (or channel) of the tile."""
        d = self.desc
        with m.If(is_wr):
            # channel-banked: next row continues the word; next channel: next bank
            with m.If(~last_y):
                m.d.sync += word.eq(word + 1)
            with m.Elif(bank == self._rows - 1):
                m.d.sync += [bank.eq(0), rowterm.eq(rowterm + d.chan_words),
                             word.eq(rowterm + d.chan_words)]
            with m.Else():
                m.d.sync += [bank.eq(bank + 1), word.eq(rowterm)]
        with m.Else():
            m.d.sync += [phase.eq(0), phase_off.eq(0), bank.eq(0), word.eq(0),
                         rowterm.eq(rowterm + d.row_words)]
