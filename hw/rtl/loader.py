"""The tile loader: feature map → input tile buffer, one value per cycle, padding included."""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.common import (Events, counter, delay, delay_taps, desc_layout, end_ahead,
                                    one_hot)

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

    With ``lanes`` = 2 a layer with ``ld_pair`` moves two values a cycle: lane 1 reads the
    feature map's port B at ``fm_addr + ld_pair_step`` and writes another bank
    (:func:`~cnnforge.hw.compiler.program.loader_pairing`): x pairs (lane 0 takes the tile
    columns xi with ``(xi // S)`` even, lane 1 ``xi + S``: bank + 1 mod C, the next word past
    bank C − 1) or channel pairs (channels n, n + 1: bank + 1, the same word). The loop's row
    and channel bounds are then its iterations (``ld_xits``, ``ld_nits``).

    Timing: the feature map's read data arrive one cycle after ``fm_addr``; the value (or the
    padding) is registered once more before the buffer write, so the block RAM's clock-to-out is
    not in front of the write (``fm_latency`` 2: the data registered twice, the first straight
    out of the block RAM, so that its clock-to-out and the padding multiplexer do not share a
    cycle). A tile's half is marked full (``slot_set``) with its last write.

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
    lanes : int
        1, or 2 (``AcceleratorConfig.loader_lanes``): the lane-1 ports below exist.
    fm_latency : int
        Cycles from the feature-map read's address to its data registered for the padding
        multiplexer (:func:`~cnnforge.hw.models.timing.fm_read_latency`): 1, 2, or 5.
    fm_port_latency : int
        Cycles from the address to the feature map's port data (1, or 4 in banks:
        :func:`~cnnforge.hw.models.timing.read_port_latency`); the loader registers the data
        ``fm_latency − fm_port_latency`` times.

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
    fm_addr1, fm_data1, wr1_en, wr1_bank, wr1_addr, wr1_data
        Lane 1's feature-map read (port B) and tile-buffer write (``lanes`` = 2 only).
    done : Out(1)
        The layer's last tile has been read.
    events : Out
        ``fm_reads``, ``ibuf_writes`` of this cycle.
    """

    FIELDS = ("df", "banks_on_rows", "H", "W", "z_in", "ld_start", "y_start", "x_start",
              "ld_row_step", "ld_chan_step", "ld_tile_row_step", "ld_tile_col_step", "ld_blk_step",
              "tile_y_step", "tile_x_step", "Wq", "row_words", "chan_words", "last_ld_xits",
              "last_Tr_in", "last_ld_nits", "last_ld_nits_tail", "last_ld_blocks",
              "last_ntr", "last_ntc", "last_sw")
    PAIR_FIELDS = ("ld_pair", "ld_pair_step", "ld_odd", "ld_odd_tail", "ld_x1_lim", "ld_x1_lo",
                   "ld_x1_hi", "ld_x_jump")

    def __init__(self, banks, rows, cols, slot_words, addr_width, fm_addr_width, desc, most,
                 lanes=1, fm_latency=1, fm_port_latency=1):
        self._banks, self._rows, self._cols = banks, rows, cols
        self._slot_words = slot_words
        self._lanes, self._fm_latency = lanes, fm_latency
        self._fm_port_latency = fm_port_latency
        self._most = {k: most(k) for k in ("ntr", "ntc", "ld_nits", "ld_blocks", "Tr_in",
                                           "ld_xits")}
        self.EVENTS = {"fm_reads": lanes, "ibuf_writes": lanes}
        fields = self.FIELDS + (self.PAIR_FIELDS if lanes > 1 else ())
        lane1 = {}
        if lanes > 1:
            lane1 = {"fm_addr1": Out(fm_addr_width), "fm_data1": In(signed(8)),
                     "wr1_en": Out(1), "wr1_bank": Out(range(max(2, banks))),
                     "wr1_addr": Out(addr_width), "wr1_data": Out(signed(8))}
        super().__init__({
            **lane1,
            "desc": In(desc_layout(desc, fields)),
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

        active, slot, loading = (Signal(name=n) for n in ("active", "slot", "loading"))
        tr, tc = counter(most["ntr"], "tr"), counter(most["ntc"], "tc")
        blk = counter(most["ld_blocks"], "blk")
        # (named: a generator's signals get none, and the timing reports show them)
        row_fm, tile_fm, blk_fm, fm = (Signal(signed(fm_aw + 2), name=f"{n}fm")
                                       for n in ("row_", "tile_", "blk_", ""))
        y0, x0, y, x = (Signal(signed(16), name=n) for n in ("y0", "x0", "y", "x"))
        n, yi, xi = (counter(most["ld_nits"], "n"), counter(most["Tr_in"], "yi"),
                     counter(most["ld_xits"], "xi"))
        cs = self._column_state(m, aw)
        bank, word, phase_off = cs.bank, cs.word, cs.phase_off
        rowterm = Signal(aw)
        # first write stage: address and control, with the feature map's read in flight
        lw_en, lw_bank, lw_addr = Signal(), Signal.like(self.wr_bank), Signal(aw)
        lw_inb, lw_last, lw_slot = Signal(), Signal(), Signal()
        # the half `slot` still to be flagged full: its tile's last write in the write stages
        filling = Signal()

        inb = Signal()
        # the map's size registered here, a cycle behind the descriptor (held from the layer's
        # start; the first element is two cycles later): the descriptor's route is not in
        # front of the compares' carry chains (timing: 22.2 ns on the UP5K)
        map_h, map_w = Signal.like(d.H, name="map_h"), Signal.like(d.W, name="map_w")
        m.d.sync += [map_h.eq(d.H), map_w.eq(d.W)]
        m.d.comb += inb.eq((y >= 0) & (y < map_h) & (x >= 0) & (x < map_w))
        last_blk, last_tc, last_tile, next_tile, blk_end = self._tile_flags(m, blk, tc, tr)
        tile = SimpleNamespace(tr=tr, tc=tc, blk=blk, row_fm=row_fm, tile_fm=tile_fm,
                               blk_fm=blk_fm, y0=y0, x0=x0)
        # the tile's last element registered: the next block's or tile's place is set in the
        # waiting cycle after it (the last write's cycle, in which no tile can start), so the
        # element loop's end is not in front of the tile registers' enable (timing: UP5K)
        advance = Signal()
        # whether xi, yi and n are at their last value, kept with the counters (each set from
        # the counter's next value: compares with bounds registered from the descriptor, which
        # is held from the layer's start), so that the element loop's decisions are one LUT
        last_x, last_y, last_n = (Signal(name=n) for n in ("last_x", "last_y", "last_n"))
        ahead = {k: end_ahead(m, d[f"last_{k}"], k)
                 for k in ("ld_xits", "Tr_in", "ld_nits", "ld_nits_tail")}
        bound = {k: v[0] for k, v in ahead.items()}
        single = {k: v[1] for k, v in ahead.items()}
        # (the compare, not the flag: in the cycle after the advance the flag is a block late)
        n_single = Mux(blk_end, single["ld_nits_tail"], single["ld_nits"])
        # (the block's n bound, set while the tile waits: no multiplexer in front of the compare)
        n_bound = Signal(max(len(bound["ld_nits"]), len(bound["ld_nits_tail"])), name="n_bound")
        last_elem = last_x & last_y & last_n

        m.d.sync += [lw_en.eq(0), lw_last.eq(0), advance.eq(0)]
        lane1 = _Lane1(self, m, events, is_wr, x0) if self._lanes > 1 else None
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
                         *self._row_start(cs), rowterm.eq(0),
                         last_x.eq(single["ld_xits"]), last_y.eq(single["Tr_in"]),
                         last_n.eq(n_single),
                         n_bound.eq(Mux(blk_end, bound["ld_nits_tail"], bound["ld_nits"]))]
            with m.If(~self.slot_full.bit_select(slot, 1) & ~filling & ~lw_en):
                m.d.sync += loading.eq(1)
            with m.If(advance):
                self._advance(m, tile, last_blk, next_tile, last_tc)
        with m.Elif(loading):
            m.d.comb += [self.fm_en.eq(1), self.fm_addr.eq(fm)]
            with m.If(inb):
                events.count("fm_reads")
            m.d.sync += [lw_en.eq(1), lw_bank.eq(bank), lw_inb.eq(inb), lw_slot.eq(slot),
                         lw_addr.eq(Mux(slot, self._slot_words, 0) + rowterm + phase_off + word),
                         lw_last.eq(last_elem)]
            if self._lanes > 1:
                lane1.load(fm, y, x, bank, last_n & Mux(last_blk, d.ld_odd_tail, d.ld_odd))
            with m.If(~last_x):
                m.d.sync += [xi.eq(xi + 1), last_x.eq(xi == bound["ld_xits"])]
                # (x pairs: past lane 1's columns at the end of lane 0's block of S)
                step = Mux(cs.phase_last, d.ld_x_jump, 1) if self._lanes > 1 else 1
                m.d.sync += [x.eq(x + step), fm.eq(fm + step)]
                self._next_column(m, is_wr, cs)
            with m.Else():
                m.d.sync += [xi.eq(0), x.eq(x0), last_x.eq(single["ld_xits"])]
                with m.If(~last_y):
                    m.d.sync += [yi.eq(yi + 1), y.eq(y + 1), fm.eq(fm + d.ld_row_step),
                                 last_y.eq(yi == bound["Tr_in"])]
                with m.Else():
                    m.d.sync += [yi.eq(0), y.eq(y0), n.eq(n + 1), fm.eq(fm + d.ld_chan_step),
                                 last_y.eq(single["Tr_in"]), last_n.eq(n == n_bound)]
                self._next_row(m, is_wr, last_y, cs, rowterm)
            with m.If(last_elem):
                m.d.sync += [loading.eq(0), slot.eq(~slot), advance.eq(~last_tile)]
                with m.If(last_tile):
                    m.d.sync += [active.eq(0), self.done.eq(1)]
        # in the WR layout the word is absolute (word), not an offset from rowterm
        addr_wr = Signal(aw)
        m.d.comb += addr_wr.eq(Mux(slot, self._slot_words, 0) + word)
        with m.If(loading & is_wr):
            m.d.sync += lw_addr.eq(addr_wr)

        m.d.comb += filling.eq(self._write(m, events, lane1, slot, {
            "en": lw_en, "bank": lw_bank, "addr": lw_addr, "inb": lw_inb, "last": lw_last,
            "slot": lw_slot}))
        events.drive(self.events)
        return m

    def _write(self, m, events, lane1, slot, first):
        """The write stages after the first (``first``: its registers): with an ``fm_latency``
        above 1 the feature map's data are registered as they leave the memory and the write's
        control waits as many stages with them; the last stage registers the data (or the
        padding value) with the write. Returns whether a tile's last write to the half ``slot``
        is in the stages (its flag not yet set: the half is not free, though its flag says so;
        with the banked map's five stages a next tile of a few elements can come round to it)."""
        d = self.desc
        extra = self._fm_latency - 1
        taps = {k: delay_taps(m, v, extra, f"lw_{k}") for k, v in first.items()}
        stage = {k: t[-1] for k, t in taps.items()}
        fm_data = delay(m, self.fm_data, self._fm_latency - self._fm_port_latency, "fm_q")
        lw2_last, lw2_slot = Signal(), Signal()
        m.d.sync += [self.wr_en.eq(stage["en"]), self.wr_bank.eq(stage["bank"]),
                     self.wr_addr.eq(stage["addr"]), lw2_last.eq(stage["last"]),
                     lw2_slot.eq(stage["slot"]),
                     self.wr_data.eq(Mux(stage["inb"], fm_data, d.z_in))]
        with m.If(self.wr_en):
            events.count("ibuf_writes")
        if lane1 is not None:
            lane1.write(stage["addr"], self._fm_latency, self._fm_port_latency)
        with m.If(lw2_last):
            m.d.comb += self.slot_set.eq(one_hot(lw2_slot))
        return Cat(*(last & (s == slot) for last, s in
                     zip(taps["last"] + [lw2_last], taps["slot"] + [lw2_slot]))).any()

    def _advance(self, m, t, last_blk, next_tile, last_tc):
        """The next block's or the next tile's place (``t``: the tile registers), after a
        tile's last element that was not the layer's."""
        d = self.desc
        with m.If(~last_blk):
            m.d.sync += [t.blk.eq(t.blk + 1), t.blk_fm.eq(t.blk_fm + d.ld_blk_step)]
        with m.If(next_tile):
            m.d.sync += t.blk.eq(0)
            with m.If(last_tc):
                m.d.sync += [t.tc.eq(0), t.tr.eq(t.tr + 1),
                             t.row_fm.eq(t.row_fm + d.ld_tile_row_step),
                             t.tile_fm.eq(t.row_fm + d.ld_tile_row_step),
                             t.blk_fm.eq(t.row_fm + d.ld_tile_row_step),
                             t.x0.eq(d.x_start), t.y0.eq(t.y0 + d.tile_y_step)]
            with m.Else():
                m.d.sync += [t.tc.eq(t.tc + 1),
                             t.tile_fm.eq(t.tile_fm + d.ld_tile_col_step),
                             t.blk_fm.eq(t.tile_fm + d.ld_tile_col_step),
                             t.x0.eq(t.x0 + d.tile_x_step)]

    def _tile_flags(self, m, blk, tc, tr):
        """Registered flags of the tile's place: ``last_blk, last_tc, last_tile`` and
        ``next_tile`` (the next tile follows: in the next column, or the next row of tiles
        where ``last_tc``), and the compare ``blk_end`` (``last_blk`` unregistered)."""
        d = self.desc
        # The tile's place among the layer's tiles, compared once and registered: tr, tc and
        # blk change only in the cycle after a tile's last element (its last write's, which
        # no tile starts in), and a second cycle waiting for a free half always follows, so
        # the flags are current before the next tile's first element (off the path from the
        # descriptor to the counters' next values: timing); what follows
        # the tile — the layer's end, the next block, the next tile — one flag each, so that a
        # register's enable at the tile's end is one LUT (timing: UP5K)
        last_blk, last_tc, last_tile, next_tile = (
            Signal(name=n) for n in ("last_blk", "last_tc", "last_tile", "next_tile"))
        blk_end, tc_end, tr_end = (blk == d.last_ld_blocks, tc == d.last_ntc,
                                   tr == d.last_ntr)
        m.d.sync += [last_blk.eq(blk_end), last_tc.eq(tc_end),
                     last_tile.eq(tr_end & tc_end & blk_end),
                     next_tile.eq(blk_end & ~(tr_end & tc_end))]
        return last_blk, last_tc, last_tile, next_tile, blk_end

    def _column_state(self, m, aw):
        """The element loop's position in a row: ``phase`` (xi mod S) and its offset
        ``phase_off``, the bank and the word, with ``phase == last_sw`` and (x-banked, one
        lane) ``bank == C − 1`` kept a step ahead in ``phase_last`` and ``bank_last``, so that
        no compare is in front of the word's enable (timing: the UP5K KWS core's worst path,
        six LUTs from the phase)."""
        cs = SimpleNamespace(
            phase=Signal(8, name="phase"), phase_off=Signal(aw, name="phase_off"),
            bank=Signal(range(max(2, self._banks)), name="bank"), word=Signal(aw, name="word"),
            phase_last=Signal(name="phase_last"), bank_last=Signal(name="bank_last"))
        cs.sw_before_last, cs.sw_single = end_ahead(m, self.desc.last_sw, "sw")
        return cs

    def _row_start(self, cs):
        """The assignments that put the row position at its start (phase, bank, word 0)."""
        return [cs.phase.eq(0), cs.phase_off.eq(0), cs.bank.eq(0), cs.word.eq(0),
                cs.phase_last.eq(cs.sw_single), cs.bank_last.eq(self._cols == 1)]

    def _next_column(self, m, is_wr, cs):
        """Next xi of a row: WR continues the word; x-banked: next phase, else next bank."""
        d = self.desc
        phase, phase_off, bank, word = cs.phase, cs.phase_off, cs.bank, cs.word
        with m.If(is_wr):
            m.d.sync += word.eq(word + 1)
        with m.Elif(cs.phase_last):
            m.d.sync += [phase.eq(0), phase_off.eq(0), cs.phase_last.eq(cs.sw_single)]
            C = self._cols
            if self._lanes > 1:      # x pairs: lane 0 skips lane 1's bank
                nb = Signal(range(C + 2), name="pair_bank")
                m.d.comb += nb.eq(bank + 1 + d.ld_pair)
                with m.If(nb >= C):
                    m.d.sync += [bank.eq(nb - C), word.eq(word + 1)]
                with m.Else():
                    m.d.sync += bank.eq(nb)
            else:
                with m.If(cs.bank_last):
                    m.d.sync += [bank.eq(0), word.eq(word + 1), cs.bank_last.eq(C == 1)]
                with m.Else():
                    m.d.sync += [bank.eq(bank + 1), cs.bank_last.eq(bank == C - 2)]
        with m.Else():
            m.d.sync += [phase.eq(phase + 1), phase_off.eq(phase_off + d.Wq),
                         cs.phase_last.eq(phase == cs.sw_before_last)]

    def _next_row(self, m, is_wr, last_y, cs, rowterm):
        """Next row (or channel) of the tile."""
        d = self.desc
        bank, word = cs.bank, cs.word
        with m.If(is_wr):
            # channel-banked: next row continues the word; next channel: next bank
            # (channel pairs: the next pair, two banks on; R is even)
            pair = d.ld_pair if self._lanes > 1 else 0
            with m.If(~last_y):
                m.d.sync += word.eq(word + 1)
            with m.Elif(bank == self._rows - 1 - pair):
                m.d.sync += [bank.eq(0), rowterm.eq(rowterm + d.chan_words),
                             word.eq(rowterm + d.chan_words)]
            with m.Else():
                m.d.sync += [bank.eq(bank + 1 + pair), word.eq(rowterm)]
        with m.Else():
            m.d.sync += [*self._row_start(cs), rowterm.eq(rowterm + d.row_words)]


class _Lane1:
    """The loader's second lane (``lanes`` = 2): where lane 0 reads (fm, y, x) of bank ``bank``,
    lane 1 reads ``fm + ld_pair_step`` on port B and writes bank + 1 (x-banked past bank C − 1:
    bank 0, the next word), one write stage behind lane 0's registers, like lane 0's."""

    def __init__(self, loader, m, events, is_wr, x0):
        self._l, self._m, self._events, self._is_wr = loader, m, events, is_wr
        d = loader.desc
        # the tile row's end for lane 1 (x pairs: xi + S < Tc_in), set while a tile waits
        self.x1_lim = Signal(signed(17), name="x1_lim")
        m.d.sync += self.x1_lim.eq(x0 + d.ld_x1_lim)
        self.en, self.inb, self.carry = (Signal(name=f"lw1_{n}") for n in ("en", "inb", "carry"))
        self.bank = Signal.like(loader.wr1_bank, name="lw1_bank")
        m.d.sync += self.en.eq(0)

    def load(self, fm, y, x, bank, odd_last):
        """The lane's read and first write stage in a loading cycle of lane 0 at (fm, y, x),
        bank ``bank``; ``odd_last``: the last channel pair of an odd count (lane 1 idle)."""
        m, lo, d = self._m, self._l, self._l.desc
        valid = Signal(name="lane1_valid")
        inb = Signal(name="lane1_inb")
        m.d.comb += [valid.eq(d.ld_pair & (x < self.x1_lim) & ~odd_last),
                     inb.eq((y >= 0) & (y < d.H) & (x >= d.ld_x1_lo) & (x < d.ld_x1_hi)),
                     lo.fm_addr1.eq(fm + d.ld_pair_step)]
        with m.If(valid & inb):
            self._events.count("fm_reads")
        wrap = ~self._is_wr & (bank == lo._cols - 1)
        m.d.sync += [self.en.eq(valid), self.inb.eq(inb), self.carry.eq(wrap),
                     self.bank.eq(Mux(wrap, 0, bank + 1))]

    def write(self, addr, fm_latency, fm_port_latency):
        """The last write stage: lane 0's word ``addr`` (+ 1 past bank C − 1), the data or
        padding (``fm_latency`` 2: the data and the first stage registered once more)."""
        m, lo, d = self._m, self._l, self._l.desc
        first = {"en": self.en, "inb": self.inb, "carry": self.carry, "bank": self.bank}
        stage = {k: delay(m, v, fm_latency - 1, f"lw1_{k}") for k, v in first.items()}
        fm_data = delay(m, lo.fm_data1, fm_latency - fm_port_latency, "fm1_q")
        m.d.sync += [lo.wr1_en.eq(stage["en"]), lo.wr1_bank.eq(stage["bank"]),
                     lo.wr1_addr.eq(addr + stage["carry"]),
                     lo.wr1_data.eq(Mux(stage["inb"], fm_data, d.z_in))]
        with m.If(lo.wr1_en):
            self._events.count("ibuf_writes")

