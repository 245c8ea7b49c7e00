"""The dataflow controller: the tile loop nest of a layer and the operand streams into the PE
array, for output reuse (OR), input and weight reuse (IR, WR: stationary operands preloaded)
and the Winograd transform's reads (``docs/dataflows.md``; Zhang et al., FPGA 2015, §3.3)."""

from contextlib import nullcontext
from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.common import (Events, connect_desc, counter, desc_layout, end_ahead,
                                    most_of, one_hot)
from cnnforge.hw.rtl.pe_array import BeatControl, beat_fields
from cnnforge.hw.rtl.walker import Im2colWalker
from cnnforge.hw.rtl.winograd import group_layout, patch_layout

__all__ = ["Controller"]


class Controller(wiring.Component):
    """Issues a layer's passes (OR, Winograd) or groups (IR, WR) from the tiles the loader has put
    in the input tile buffer, tile by tile (tile rows outer, tile columns inner).

    * **OR**: for each tile, each block of R output channels, each output row, each group of C
      output columns: one pass of L beats (K valid: the im2col walk over (n, ky, kx), one bank
      word per column, one weight word per row); the pass's coordinates go to the metadata FIFO.
      A depthwise layer's tile comes in loads of R channels: each block releases its half of
      the buffer and waits for the next load (WAIT_BLOCK). In the depthwise row mapping
      (``dw_rows``) the walk is kh input row segments of kw + C − 1 columns, every bank (one
      channel each) reading the same word.
    * **IR / WR**: for each tile, each group (IR: C output pixels of one row, all M channels;
      WR: C output channels, all pixels of the tile), each reduction block: preload R rows of
      stationary operands (IR: inputs from the walker; WR: weight-ROM rows), then stream the
      other operand (IR: M weight words; WR: the tile's pixels, R channels per beat).
    * **Winograd**: for each group of C tiles of one tile row, read the 4×4 patches of every
      channel (16 reads each) for the input transform.

    Every change of this unit's timing is mirrored in :mod:`cnnforge.hw.models.perf`.

    Members
    -------
    start : In(1)
        The layer starts.
    slot_full, slot_clr : In(2), Out(2)
        Input tile buffer halves loaded; the half this cycle's tile change releases.
    psum_full, psum_set : In(2), Out(2)
        Partial-sum buffer halves busy; the half a new group takes.
    v_full : In(2)
        Winograd V-buffer halves written and not consumed.
    bank_raddr : Out(addr_width).array(banks)
        Tile-buffer read addresses (data one cycle later).
    w_addr : Out(w_addr_width)
        Weight ROM read address (data one cycle later).
    beat, beat_q1 : Out(BeatControl), Out
        Registered with the reads: the beat's control bits for the array, the bank rotation.
    lane_only, lane : Out(1), Out(range(R))
        Registered with the reads: a depthwise beat, whose weight word (a tap of R channels)
        counts only in row ``lane`` (the beat's channel); the other rows get 0.
    w_zero : Out(1)
        Registered with the reads: a depthwise row mapping's beat past the kernel's kw
        columns, whose weights are 0 (not stored: the weight address holds).
    preload_en, preload_row, preload_zero : Out
        Registered with the reads: a stationary row arrives (zero: past K, IR).
    meta_en, meta : Out(1), Out(meta_layout)
        A pass's or group's coordinates into the metadata FIFO.
    wgroup : Out(stream.Signature(group_layout))
    patch : Out(patch_layout)
        Registered with the reads: the patch element arriving (Winograd).
    done : Out(1)
        All tiles issued.
    passes_issued, groups_issued : Out(8)
        Modulo 2^8 (at most a few are in flight: equal modulo 2^8 is equal).
    """

    #: The outputs timed for a one-cycle tile-buffer read: registered with the reads, or (the
    #: weight address) issued with them; a slower buffer delays them all alike.
    READ_ALIGNED = ("beat", "beat_q1", "lane_only", "lane", "w_zero", "preload_en", "preload_row",
                    "preload_zero", "patch", "w_addr")

    FIELDS = ("df", "dw_lanes", "dw_rows", "M", "OW", "K", "KB", "Lmin", "Tr", "Tc", "rows_last",
              "cols_last", "groups_full", "groups_last", "w_base", "dst", "PW", "sw", "kw",
              "fd_row_step", "fd_ky_step", "chan_words", "out_mb_step", "out_tile_step",
              "last_ld_blocks", "pool_mask", "tr_phase_step", "last_K", "last_L", "last_MB",
              "last_ntr", "last_ntc", "last_N", "last_KB", "last_nblk", "last_kw", "w_taps",
              "ctail_full", "ctail_last", "ltail_full", "ltail_last",
              "last_w_taps", *Im2colWalker.FIELDS)

    def __init__(self, program, addr_width, w_addr_width, meta, desc):
        cfg = program.config
        self._program = program
        self._rows, self._cols, self._banks = cfg.rows, cfg.cols, program.input_banks
        self._modes = {Dataflow(layer.values["df"]) for layer in program.layers}
        self._full_desc = desc
        self.EVENTS = {"ibuf_reads": 3 * cfg.cols + cfg.rows, "weight_reads": 3}
        super().__init__({
            "desc": In(desc_layout(desc, dict.fromkeys(self.FIELDS))),
            "start": In(1),
            "slot_full": In(2), "slot_clr": Out(2),
            "psum_full": In(2), "psum_set": Out(2), "v_full": In(2),
            "bank_raddr": Out(addr_width).array(self._banks),
            "w_addr": Out(w_addr_width),
            "beat": Out(BeatControl), "beat_q1": Out(range(max(2, cfg.cols))),
            "lane_only": Out(1), "lane": Out(range(max(2, cfg.rows))), "w_zero": Out(1),
            "preload_en": Out(1), "preload_row": Out(range(max(2, cfg.rows))),
            "preload_zero": Out(1),
            "meta_en": Out(1), "meta": Out(meta),
            "wgroup": Out(stream.Signature(group_layout)),
            "patch": Out(patch_layout),
            "done": Out(1), "passes_issued": Out(8), "groups_issued": Out(8),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def _most(self, *names):
        return most_of(self._program, *names)

    def elaborate(self, platform):
        m = Module()
        prog, R, C = self._program, self._rows, self._cols
        most, d = self._most, self.desc
        aw = len(self.bank_raddr[0])
        s = SimpleNamespace()        # the loop nest's registers, shared by the states
        s.events = Events(m)
        s.is_or, s.is_ir = d.df == Dataflow.OR, d.df == Dataflow.IR
        s.is_wr, s.is_wino = d.df == Dataflow.WR, d.df == Dataflow.WINOGRAD
        # a depthwise layer loads its tiles in blocks of R channels (WAIT_BLOCK)
        s.block_loads = any(layer.values["ld_blocks"] > 1 for layer in prog.layers)
        s.slot = Signal()
        s.tr, s.tc = counter(most("ntr"), "tr"), counter(most("ntc"), "tc")
        s.tr0 = counter(most("OH") + most("Tr"), "tr0")
        s.tc0 = counter(most("OW") + most("Tc"), "tc0")
        s.rows = counter(most("Tr", "rows_last"), "rows")
        s.cols = counter(most("Tc", "cols_last"), "cols")
        # the tile's last output row and last column group (rows − 1, groups − 1)
        s.rlast = counter(most("Tr", "rows_last"), "rlast")
        s.glast = counter(most("groups_full", "groups_last"), "glast")
        # whether the current beat is valid (OR: s < K; IR/WR streams: s < beats), kept one beat
        # ahead; OR: the weight pointer of the next block of R channels (w_pass + K)
        w_aw = len(self.w_addr)
        s.valid, s.w_mb = Signal(name="valid"), Signal(w_aw, name="w_mb")
        # OR: whether this beat ends the pass (s == L − 1), kept one beat ahead so that the
        # comparison is not in front of the end-of-pass conditions and the walker's reset
        s.pass_end = Signal()
        self._pass_length(s)
        s.mb = counter(most("MB"), "mb")
        s.row, s.g = Signal.like(s.rlast, name="row"), Signal.like(s.glast, name="g")
        s.m0 = counter(most("M") + max(R, C), "m0")
        # beats of a pass (L) or of a stream (M, the tile's pixels, Lmin)
        beats = max(most("L", "K", "M", "Lmin"),
                    max(layer.values["Tr"] * layer.values["Tc"] for layer in prog.layers))
        s.s, s.beats = counter(beats, "s"), counter(beats, "beats")
        # s == 0, kept with s (the pass's metadata write and the first / swap beat bits are
        # not behind its compare: timing, UP5K)
        s.s_first = Signal(init=1, name="s_first")
        # IR / WR streams: the last valid beat (beats − 1), the block's last beat (length − 1)
        s.blast, s.llast = counter(beats, "blast"), counter(beats, "llast")
        # IR / WR streams: s == llast kept one beat ahead (s_end), from llast − 1 registered
        # (llast is set in GROUP / PRELOAD, two or more cycles before the stream's first beat)
        s.s_end, s.llast_m1 = Signal(name="s_end"), Signal.like(s.llast, name="llast_m1")
        m.d.sync += s.llast_m1.eq(s.llast - 1)
        s.kb = counter(most("KB"), "kb")
        s.ox0 = counter(most("OW") + most("Tc") + C, "ox0")
        s.row_base = Signal(aw)
        s.w, s.w_pass = Signal(w_aw, name="w"), Signal(w_aw, name="w_pass")
        # depthwise: the tap of the beat's channel (the weight word) and the channel in the block
        s.any_dw = any(layer.values.get("dw_lanes") for layer in prog.layers)
        # the depthwise row mapping: every bank reads the walker's one address
        s.any_dw_rows = prog.depthwise_rows
        s.tap = counter(most("w_taps"), "tap")
        s.tap_end = Signal(name="tap_end")
        # (registered from the descriptor, held from the layer's start, cycles before its
        # first tile)
        s.tap_before_last, s.one_tap = end_ahead(m, d.last_w_taps, "tap")
        s.lane = Signal.like(self.lane, name="dw_lane")
        s.slot_base = Mux(s.slot, prog.slot_words, 0)
        self._group_offsets(s)
        self._tile_end_column(m, s)
        s.oy = s.tr0 + s.row
        self._output_bases(m, s)
        self._loop_ends(m, s)
        # psum half, V half the transform writes next
        s.half, s.vh = Signal(name="half"), Signal(name="vh")
        s.wn = Signal(16)                       # channel whose 4×4 patches the transform reads

        m.submodules.walker = s.walker = Im2colWalker(C, aw, self._full_desc, most("kh"),
                                                      most("walk_kw"), dw_rows=s.any_dw_rows)
        connect_desc(m, d, s.walker.desc)
        s.pl_active = Signal(name="pl_active")
        s.pl_row = Signal(range(max(2, R)), name="pl_row")
        s.pl_w = Signal(w_aw)
        s.pl_start = Signal()      # pulse: begin a preload sequence of R rows next cycle
        # the beat's bits (without IR/WR layers only those of output stationary passes) and
        # the strobes are pulses: 0 unless a state sets them
        m.d.sync += [self.beat[f].eq(0) for f in beat_fields(prog.stationary)]
        m.d.sync += [self.patch.valid.eq(0), self.lane_only.eq(0)]
        if s.any_dw_rows:
            # (a pulse too: an IR or WR layer after a depthwise layer's last beat past kw must
            # not find its weights zeroed)
            m.d.sync += self.w_zero.eq(0)
        if prog.stationary:
            m.d.sync += self.preload_en.eq(0)
        # the states of the modes the network uses (OR always; without IR/WR layers the array
        # has no stationary mode either, and the stationary bits of the beat and the preload
        # strobes are left undriven constants, not registers: yosys rejects chains of constant
        # registers with "conflicting init values")
        s.modes = [(s.is_or, "OR_PASS", self._or_pass),
                   (s.is_wino, "W_GROUP", self._winograd_reads),
                   (None, "GROUP", self._stationary)]
        if not prog.stationary:
            del s.modes[2]
        if Dataflow.WINOGRAD not in self._modes:
            del s.modes[1]
        if prog.stationary:
            self._preload(m, s)
        if len(s.modes) == 1:
            # output reuse only (its mode is always the first): the walker resets at a pass end
            # (and in WAIT_TILE, WAIT_BLOCK) and steps on a valid beat whatever the state —
            # elsewhere (IDLE, WAIT_BLOCK) a stale flag moves a walk that is restarted before it
            # is read — so its registers' enables are not behind the state's decode (timing: six
            # LUTs on the UP5K)
            m.d.comb += [s.walker.reset.eq(s.pass_end), s.walker.step.eq(s.valid)]
        with m.FSM(name="controller"):
            self._start_tile(m, s)
            for _, _, states in s.modes:
                states(m, s)
        s.events.drive(self.events)
        return m

    def _output_bases(self, m, s):
        """OR passes' destination address dst + m0·PHW + (oy >> pshift)·PW, kept incrementally
        (no multiplier): ``s.trbase`` at the tile row, ``s.mbase`` at the block of R channels,
        ``s.obase`` at the output row; ``s.tr_ph`` and ``s.ph`` are oy mod the pooling window
        at the tile row and at the output row (a tile need not start on a window boundary)."""
        d = self.desc
        fm_w = len(self.meta.out_base)
        s.trbase, s.mbase, s.obase = (Signal(fm_w, name=f"fd_{n}base") for n in "tmo")
        s.tr_ph, s.ph = Signal(8, name="tr_ph"), Signal(8, name="ph")
        s.tr_ph_next = Signal(9)
        m.d.comb += s.tr_ph_next.eq(s.tr_ph + d.tr_phase_step)
        # the next tile row's trbase, registered (it changes at a row of tiles' end, long before
        # the next): no adder behind the tile end's enables (timing, UP5K)
        s.trbase_next = Signal(fm_w, name="fd_tbase_next")
        m.d.sync += s.trbase_next.eq(s.trbase + d.out_tile_step
                                     + Mux(s.tr_ph_next > d.pool_mask, d.PW, 0))

    def _pass_length(self, s):
        """OR with ``narrow_passes``: ``s.last_group``, whether the pass is its row's last
        column group, and ``s.or_llast``, its last beat (L − 1 of its group: ``or_pass_beats``),
        both set with the pass (at the pass end before it, or in WAIT_TILE); ``s.ctail`` and
        ``s.ltail``, the row's last group's columns − 1 and last beat in this tile. Without,
        every pass lasts L (``s.or_llast`` is the descriptor's ``last_L``)."""
        s.narrow = self._program.config.narrow_passes
        if not s.narrow:
            s.or_llast = self.desc.last_L
            return
        s.last_group = Signal(name="last_group")
        s.or_llast = counter(self._most("L"), "or_llast")
        s.ctail = Signal(range(max(2, self._cols)), name="ctail")
        s.ltail = Signal.like(s.or_llast, name="ltail")

    def _tile_end_column(self, m, s):
        """``s.x_end``: the tile's end column, min(tc0 + Tc, OW), registered: a cycle behind
        tc0, which changes only as the controller enters WAIT_TILE, a cycle or more before a
        pass reads it (the descriptor → adder → compare was in front of the pass metadata
        FIFO's write data). ``tc0 + Tc < OW`` as ``tc0 < OW − Tc``, the difference registered
        from the descriptor: the add and the compare side by side, not in series."""
        d = self.desc
        s.x_end = Signal.like(s.tc0, name="x_end")
        ow_less_tc = Signal(signed(len(d.OW) + 1), name="ow_less_tc")
        m.d.sync += [ow_less_tc.eq(d.OW - d.Tc),
                     s.x_end.eq(Mux(s.tc0 < ow_less_tc, s.tc0 + d.Tc, d.OW))]

    def _loop_ends(self, m, s):
        """The loop end flags ``s.g_end`` … ``s.kb_end``."""
        d = self.desc
        # the loop ends (each counter at its bound), registered: a decision at a pass, block or
        # group end reads flags set a cycle after the counters changed, and such ends are two
        # or more cycles apart (a pass is R·C + 1 or more beats), so the compares are not in
        # front of the decisions and the enables they drive
        s.g_end, s.row_end, s.mb_end, s.tc_end, s.ph_end = (
            Signal(name=f"{n}_end") for n in ("g", "row", "mb", "tc", "ph"))
        s.kb_end = Signal(name="kb_end")
        # OR: what follows the pass — the next column group, the next output row, the next
        # block of R channels or the next tile — one exclusive flag each, and whether the tile
        # is the layer's last, so that a pass end's enables are one LUT from the state.
        # (next_group is ~g_end, registered on its own all the same: read as ~g_end, the UP5K
        # KWS core packed into 5,222 cells, not 5,217, and found no legal placement on seeds 1
        # and 2 — at 99 % of the device the packing decides)
        s.next_group, s.next_row, s.next_block, s.tile_pass_end, s.last_tile = (
            Signal(name=n) for n in ("next_group", "next_row", "next_block", "tile_pass_end",
                                     "last_tile"))
        if s.narrow:
            # (whether the next group is the row's last, and whether the tile's rows have one)
            s.g_next_end, s.one_group = Signal(name="g_next_end"), Signal(name="one_group")
            m.d.sync += [s.g_next_end.eq(s.g + 1 == s.glast), s.one_group.eq(s.glast == 0)]
        g_end, row_end, mb_end = s.g == s.glast, s.row == s.rlast, s.mb == d.last_MB
        tc_end = s.tc == d.last_ntc
        m.d.sync += [s.g_end.eq(g_end), s.row_end.eq(row_end), s.mb_end.eq(mb_end),
                     s.kb_end.eq(s.kb == d.last_KB), s.tc_end.eq(tc_end),
                     s.ph_end.eq(s.ph == d.pool_mask),
                     s.next_group.eq(~g_end), s.next_row.eq(g_end & ~row_end),
                     s.next_block.eq(g_end & row_end & ~mb_end),
                     s.tile_pass_end.eq(g_end & row_end & mb_end),
                     s.last_tile.eq((s.tr == d.last_ntr) & tc_end)]

    def _walker_reset(self, m, s, rowterm, off):
        """Start a walk at row term ``rowterm`` at column offset ``off`` (``s.goff`` of a column
        group, or 0)."""
        m.d.comb += [s.walker.reset.eq(1), s.walker.reset_rowterm.eq(rowterm),
                     s.walker.reset_off.eq(s.slot_base + off)]

    def _group_offsets(self, s):
        """The walker's column offset of group g (its word in the x-banked layout; in the
        depthwise row mapping its first column, g·C) and of group g + 1, kept with g by
        :meth:`_group` (no incrementer and multiplier in front of the walker's reset, timing)."""
        C = self._cols
        groups = self._most("groups_full", "groups_last") + 1
        s.goff = Signal(range(max(2, groups * C)), name="goff")
        s.goff_next = Signal.like(s.goff, name="goff_next")
        s.goff_step = Mux(self.desc.dw_rows, C, 1) if s.any_dw_rows else 1

    def _group(self, m, s, first):
        """Column group g: the first (``first``) or the next; its walker offsets with it."""
        if first:
            m.d.sync += [s.g.eq(0), s.goff.eq(0), s.goff_next.eq(s.goff_step)]
        else:
            m.d.sync += [s.g.eq(s.g + 1), s.goff.eq(s.goff_next),
                         s.goff_next.eq(s.goff_next + s.goff_step)]

    def _walker_read(self, m, s):
        """The walker's addresses onto the x-banked buffer's read ports (the depthwise row
        mapping: onto every bank)."""
        for b in range(self._banks if s.any_dw_rows else self._cols):
            m.d.comb += self.bank_raddr[b].eq(s.walker.addr[min(b, self._cols - 1)])

    def _preload(self, m, s):
        """The stationary operands of a reduction block: R rows (IR: inputs from the walker;
        WR: weight-ROM rows), one per cycle after ``pl_start``."""
        R, C, d = self._rows, self._cols, self.desc
        with m.If(s.pl_active):
            with m.If(s.is_ir):
                self._walker_read(m, s)
                m.d.sync += [self.beat_q1.eq(s.walker.q1),
                             self.preload_zero.eq(s.walker.k >= d.K)]
                with m.If(s.walker.k < d.K):
                    s.events.count("ibuf_reads", C)
            with m.Else():
                m.d.comb += self.w_addr.eq(s.pl_w)
                m.d.sync += [s.pl_w.eq(s.pl_w + 1), self.preload_zero.eq(0)]
                s.events.count("weight_reads")
            # (WR reads weights, not the walker: stepping it anyway keeps the layer's mode out
            # of the walker's enables; the next group resets it)
            m.d.comb += s.walker.step.eq(1)
            m.d.sync += [self.preload_en.eq(1), self.preload_row.eq(s.pl_row),
                         s.pl_row.eq(s.pl_row + 1)]
            with m.If(s.pl_row == R - 1):
                m.d.sync += [s.pl_active.eq(0), s.pl_row.eq(0)]
        with m.If(s.pl_start):
            m.d.sync += [s.pl_active.eq(1), s.pl_row.eq(0)]

    def _tile_next(self, m, s):
        """Release the tile's half of the input buffer and move to the next tile."""
        d = self.desc
        m.d.comb += self.slot_clr.eq(one_hot(s.slot))
        m.d.sync += s.slot.eq(~s.slot)
        with m.If(s.last_tile):
            m.d.sync += self.done.eq(1)
            m.next = "IDLE"
        with m.Else():
            m.next = "WAIT_TILE"
            with m.If(s.tc_end):
                m.d.sync += [s.tc.eq(0), s.tc0.eq(0), s.tr.eq(s.tr + 1),
                             s.tr0.eq(s.tr0 + d.Tr), s.tr_ph.eq(s.tr_ph_next & d.pool_mask),
                             s.trbase.eq(s.trbase_next)]
            with m.Else():
                m.d.sync += [s.tc.eq(s.tc + 1), s.tc0.eq(s.tc0 + d.Tc)]

    def _group_next(self, m, s):
        """IR and Winograd groups (C pixels / tiles of one row): the next column group, else the
        next output row, else the next tile (the caller has set the next state)."""
        with m.If(~s.g_end):
            self._group(m, s, first=False)
            m.d.sync += s.ox0.eq(s.ox0 + self._cols)
        with m.Elif(~s.row_end):
            self._group(m, s, first=True)
            m.d.sync += [s.ox0.eq(s.tc0), s.row.eq(s.row + 1),
                         s.row_base.eq(s.row_base + self.desc.fd_row_step)]
        with m.Else():
            self._tile_next(m, s)

    def _start_tile(self, m, s):
        """IDLE (until the layer starts) and WAIT_TILE (until the loader has filled the tile's
        half of the buffer)."""
        d = self.desc
        with m.State("IDLE"):
            with m.If(self.start):
                m.d.sync += [s.slot.eq(0), s.tr.eq(0), s.tc.eq(0), s.tr0.eq(0), s.tc0.eq(0),
                             s.trbase.eq(d.dst), s.tr_ph.eq(0), self.done.eq(0),
                             self.passes_issued.eq(0), self.groups_issued.eq(0),
                             s.half.eq(0), s.vh.eq(0)]
                m.next = "WAIT_TILE"
                # an element-wise add runs in its own unit: nothing to issue
                with m.If(d.df == Dataflow.ADD):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        with m.State("WAIT_TILE"):
            # the tile's loop state is set in every waiting cycle (nothing reads it before the
            # tile starts), so that only the state change waits for the loader's flag: the
            # flag is not in front of these registers' enables (timing)
            rows = Mux(s.tr == d.last_ntr, d.rows_last, d.Tr)
            last_tc = s.tc == d.last_ntc
            cols = Mux(last_tc, d.cols_last, d.Tc)
            ltail = Mux(last_tc, d.ltail_last, d.ltail_full)
            one_group = Mux(last_tc, d.groups_last == 1, d.groups_full == 1)
            self._group(m, s, first=True)
            m.d.sync += [s.mb.eq(0), s.row.eq(0), s.m0.eq(0), s.s.eq(0), s.s_first.eq(1),
                         s.row_base.eq(0), s.ox0.eq(s.tc0),
                         s.mbase.eq(s.trbase), s.obase.eq(s.trbase), s.ph.eq(s.tr_ph),
                         s.w.eq(d.w_base), s.w_pass.eq(d.w_base), s.w_mb.eq(d.w_base + d.w_taps),
                         s.valid.eq(1), s.pass_end.eq(0),     # (a pass has 2 beats or more)
                         s.rows.eq(rows), s.cols.eq(cols),
                         s.rlast.eq(rows - 1),
                         s.glast.eq(Mux(last_tc, d.groups_last, d.groups_full) - 1)]
            if s.narrow:
                m.d.sync += [s.ctail.eq(Mux(last_tc, d.ctail_last, d.ctail_full)),
                             s.ltail.eq(ltail), s.last_group.eq(one_group),
                             s.or_llast.eq(Mux(one_group, ltail, d.last_L))]
            self._walker_reset(m, s, 0, 0)
            if s.any_dw:
                self._tap_restart(m, s)       # (the layer's last_w_taps)
            with m.If(self.slot_full.bit_select(s.slot, 1)):
                # the first state of the layer's mode (the last mode the network has is the
                # only one left when the others do not match)
                for i, (is_mode, state, _) in enumerate(s.modes):
                    if i == len(s.modes) - 1:
                        with (m.Else() if i else nullcontext()):
                            m.next = state
                    else:
                        with (m.Elif(is_mode) if i else m.If(is_mode)):
                            m.next = state

    def _or_pass(self, m, s):
        """OR: passes of L beats, R channels × C pixels each."""
        R, C, d = self._rows, self._cols, self.desc
        with m.State("OR_PASS"):
            self._walker_read(m, s)
            m.d.comb += self.w_addr.eq(s.w)
            m.d.sync += [self.beat.valid.eq(s.valid), self.beat.first.eq(s.s_first),
                         self.beat.last.eq(s.s == d.last_K), self.beat_q1.eq(s.walker.q1)]
            if s.any_dw:
                m.d.sync += [self.lane_only.eq(d.dw_lanes), self.lane.eq(s.lane)]
            # the row mapping's beats past kw: weight 0, no read (the address holds)
            live = ~d.dw_rows | s.walker.tap if s.any_dw_rows else Const(1)
            if s.any_dw_rows:
                m.d.sync += self.w_zero.eq(~live)
            meta = self.meta
            m.d.comb += [self.meta_en.eq(s.s_first), meta.m0.eq(s.m0), meta.oy.eq(s.oy),
                         meta.ox0.eq(s.ox0), meta.x_end.eq(s.x_end), meta.out_base.eq(s.obase)]
            if s.narrow:
                m.d.comb += meta.c_last.eq(Mux(s.last_group, s.ctail, C - 1))
            with m.If(s.valid & live):
                self._next_weight(m, s)
                s.events.count("weight_reads")
            with m.If(s.valid):
                with m.If(d.dw_rows if s.any_dw_rows else Const(0)):
                    s.events.count("ibuf_reads", R)       # one bank per row
                with m.Else():
                    s.events.count("ibuf_reads", C)
                m.d.comb += s.walker.step.eq(1)
            with m.If(s.pass_end):
                m.d.sync += [s.s.eq(0), s.s_first.eq(1),
                             self.passes_issued.eq(self.passes_issued + 1),
                             s.valid.eq(1), s.pass_end.eq(0)]
                if s.narrow:
                    # the next pass: the next group of the row, or a row's first
                    next_last = Mux(s.g_end, s.one_group, s.g_next_end)
                    m.d.sync += [s.last_group.eq(next_last),
                                 s.or_llast.eq(Mux(next_last, s.ltail, d.last_L))]
                if s.any_dw:
                    m.d.sync += s.lane.eq(0)
                    self._tap_restart(m, s)
                # the walker restarts at every pass end (after the tile's last pass too: WAIT_TILE
                # restarts it again), only where it restarts depends on the loop position
                self._walker_reset(m, s, s.row_base, s.goff_next)
                # (the four flags are exclusive)
                with m.If(s.tile_pass_end):
                    self._tile_next(m, s)
                with m.If(s.next_group):
                    self._group(m, s, first=False)
                    m.d.sync += [s.ox0.eq(s.ox0 + C), s.w.eq(s.w_pass)]
                with m.If(s.next_row):
                    self._group(m, s, first=True)
                    m.d.sync += [s.ox0.eq(s.tc0), s.row.eq(s.row + 1),
                                 s.row_base.eq(s.row_base + d.fd_row_step), s.w.eq(s.w_pass)]
                    with m.If(s.ph_end):
                        m.d.sync += [s.obase.eq(s.obase + d.PW), s.ph.eq(0)]
                    with m.Else():
                        m.d.sync += s.ph.eq(s.ph + 1)
                    self._walker_reset(m, s, s.row_base + d.fd_row_step, 0)
                with m.If(s.next_block):
                    self._group(m, s, first=True)
                    m.d.sync += [s.ox0.eq(s.tc0), s.row.eq(0), s.row_base.eq(0),
                                 s.mb.eq(s.mb + 1), s.m0.eq(s.m0 + R), s.w.eq(s.w_mb),
                                 s.w_pass.eq(s.w_mb), s.w_mb.eq(s.w_mb + d.w_taps),
                                 s.mbase.eq(s.mbase + d.out_mb_step),
                                 s.obase.eq(s.mbase + d.out_mb_step), s.ph.eq(s.tr_ph)]
                    self._walker_reset(m, s, 0, 0)
                    if s.block_loads:
                        # depthwise: the next block of R channels is the loader's next load
                        with m.If(d.last_ld_blocks != 0):
                            m.d.comb += self.slot_clr.eq(one_hot(s.slot))
                            m.d.sync += s.slot.eq(~s.slot)
                            m.next = "WAIT_BLOCK"
            with m.Else():
                m.d.sync += [s.s.eq(s.s + 1), s.s_first.eq(0),
                             s.valid.eq(s.valid & (s.s != d.last_K)),
                             s.pass_end.eq(s.s + 1 == s.or_llast)]
        if s.block_loads:
            # as WAIT_TILE, keeping the loop position: the block's channels are loaded
            with m.State("WAIT_BLOCK"):
                with m.If(self.slot_full.bit_select(s.slot, 1)):
                    self._walker_reset(m, s, 0, 0)
                    m.next = "OR_PASS"

    def _next_weight(self, m, s):
        """The weight word of the next beat: the next one, or for a depthwise layer the block's
        first tap again when a channel's kh·kw taps are done (and the next channel's lane)."""
        if not s.any_dw:
            m.d.sync += s.w.eq(s.w + 1)
            return
        d = self.desc
        with m.If(d.dw_lanes & s.tap_end):
            m.d.sync += [s.w.eq(s.w_pass), s.lane.eq(s.lane + 1)]
            self._tap_restart(m, s)
        with m.Else():
            m.d.sync += [s.w.eq(s.w + 1), s.tap.eq(s.tap + 1),
                         s.tap_end.eq(s.tap == s.tap_before_last)]

    def _tap_restart(self, m, s):
        """A depthwise channel's first tap (``tap_end``, tap == the last tap, kept with it)."""
        m.d.sync += [s.tap.eq(0), s.tap_end.eq(s.one_tap)]

    def _stationary(self, m, s):
        """IR / WR: groups of reduction blocks with a stationary operand."""
        d = self.desc
        ws = SimpleNamespace()      # the WR stream's walk over the tile's pixels
        aw = len(self.bank_raddr[0])
        ws.row, ws.col = Signal(16, name="ws_row"), Signal(16, name="ws_col")
        # the bank address slot_base + nb·chan_words + kyx offset + row offset + column offset
        # as two registers: blk (the block's, fixed while it streams) and pix (the pixel's),
        # one adder in front of the tile buffers
        ws.rowoff, ws.pix, ws.blk = (Signal(aw, name="ws_rowoff"), Signal(aw, name="ws_pix"),
                                     Signal(aw, name="ws_blk"))
        ws.nb, ws.ky, ws.kx = (counter(self._most("nblk"), "ws_nb"),
                               counter(self._most("kh"), "ws_ky"),
                               counter(self._most("kw"), "ws_kx"))
        ws.kyxoff = Signal(aw)
        # registered like the loop ends: nb and kx change at a block's end, read at the next
        ws.nb_end, ws.kx_end = Signal(name="ws_nb_end"), Signal(name="ws_kx_end")
        m.d.sync += [ws.nb_end.eq(ws.nb == d.last_nblk), ws.kx_end.eq(ws.kx == d.last_kw)]
        with m.State("GROUP"):
            # a group: IR one p-group (C pixels, all M channels); WR one channel block
            # (C channels, all pixels of the tile). Wait for its half of the psum buffer.
            with m.If(~self.psum_full.bit_select(s.half, 1) & ~s.pl_active):
                meta = self.meta
                m.d.comb += [self.psum_set.eq(one_hot(s.half)), self.meta_en.eq(1),
                             s.pl_start.eq(1), meta.m0.eq(s.m0),
                             meta.oy.eq(Mux(s.is_ir, s.oy, s.tr0)), meta.ox0.eq(s.ox0),
                             meta.x_end.eq(s.x_end), meta.rows.eq(s.rows),
                             meta.cols.eq(s.cols)]
                m.d.sync += [s.kb.eq(0), s.s.eq(0), s.s_first.eq(1),
                             self.groups_issued.eq(self.groups_issued + 1),
                             s.half.eq(~s.half), ws.nb.eq(0), ws.ky.eq(0), ws.kx.eq(0),
                             ws.blk.eq(s.slot_base), ws.kyxoff.eq(0), ws.row.eq(0),
                             ws.col.eq(0), ws.rowoff.eq(0), ws.pix.eq(0), s.pl_w.eq(s.w_pass)]
                # (the IR preload's walk; WR does not use the walker)
                self._walker_reset(m, s, s.row_base, s.goff)
                with m.If(s.is_ir):
                    m.d.sync += [s.beats.eq(d.M), s.llast.eq(d.last_L)]
                with m.Else():
                    m.d.sync += s.beats.eq(s.rows * s.cols)
                m.next = "PRELOAD"
        with m.State("PRELOAD"):
            # the first block's stationary operands; then stream. WR: the stream's length from
            # the pixel count registered in GROUP (not behind the multiplier)
            m.d.sync += s.blast.eq(s.beats - 1)
            wr_llast = Mux(s.beats > d.Lmin, s.beats, d.Lmin) - 1
            m.d.sync += s.s_end.eq(Mux(s.is_ir, d.last_L, wr_llast) == 0)  # s is 0
            with m.If(~s.is_ir):
                m.d.sync += s.llast.eq(wr_llast)
            with m.If(~s.pl_active & ~s.pl_start):
                m.d.sync += [s.w.eq(s.w_pass), s.valid.eq(1)]   # IR: block 0's stream pointer
                m.next = "STREAM"
        with m.State("STREAM"):
            self._stream(m, s, ws)

    def _stream(self, m, s, ws):
        """IR: M weight words past the preloaded inputs; WR: the tile's pixels (R channels a
        beat) past the preloaded weights; then the next block, group or tile."""
        R, C, d = self._rows, self._cols, self.desc
        m.d.sync += [self.beat.valid.eq(s.valid), self.beat.swap.eq(s.s_first),
                     self.beat.tail.eq(s.s == s.blast),
                     self.beat.first.eq(s.kb == 0), self.beat.last.eq(s.kb == d.last_KB)]
        with m.If(s.is_ir):
            m.d.comb += self.w_addr.eq(s.w)
            with m.If(s.valid):
                m.d.sync += s.w.eq(s.w + d.KB)
                s.events.count("weight_reads")
        with m.Else():
            for b in range(min(R, self._banks)):
                m.d.comb += self.bank_raddr[b].eq(ws.blk + ws.pix)
            with m.If(s.valid):
                s.events.count("ibuf_reads", R)
                with m.If(ws.col != s.cols - 1):
                    m.d.sync += [ws.col.eq(ws.col + 1), ws.pix.eq(ws.pix + d.sw)]
                with m.Else():
                    m.d.sync += [ws.col.eq(0), ws.row.eq(ws.row + 1),
                                 ws.rowoff.eq(ws.rowoff + d.fd_row_step),
                                 ws.pix.eq(ws.rowoff + d.fd_row_step)]
        # preload the next block's stationary operands once this block's first beat has passed
        # every column
        with m.If((s.s == C - 1) & (s.kb != d.last_KB)):
            m.d.comb += s.pl_start.eq(1)
        with m.If(s.s_end):
            m.d.sync += [s.s.eq(0), s.s_first.eq(1), s.valid.eq(1), s.s_end.eq(s.llast == 0)]
            with m.If(~s.kb_end):
                m.d.sync += [s.kb.eq(s.kb + 1), s.w.eq(s.w_pass + s.kb + 1), ws.row.eq(0),
                             ws.col.eq(0), ws.rowoff.eq(0), ws.pix.eq(0)]
                # WR: next (ky, kx, nb) block, nb fastest
                with m.If(~ws.nb_end):
                    m.d.sync += [ws.nb.eq(ws.nb + 1), ws.blk.eq(ws.blk + d.chan_words)]
                with m.Else():
                    m.d.sync += ws.nb.eq(0)
                    last_kx = ws.kx_end
                    kyx_next = ws.kyxoff + Mux(last_kx, d.fd_ky_step - d.kw + 1, 1)
                    m.d.sync += [ws.kyxoff.eq(kyx_next), ws.blk.eq(s.slot_base + kyx_next)]
                    with m.If(~last_kx):
                        m.d.sync += ws.kx.eq(ws.kx + 1)
                    with m.Else():
                        m.d.sync += [ws.kx.eq(0), ws.ky.eq(ws.ky + 1)]
            with m.Elif(s.is_ir):
                m.next = "GROUP"
                self._group_next(m, s)
            with m.Else():
                m.next = "GROUP"
                with m.If(~s.mb_end):
                    m.d.sync += [s.mb.eq(s.mb + 1), s.m0.eq(s.m0 + C),
                                 s.w_pass.eq(s.w_pass + d.KB * R)]
                with m.Else():
                    self._tile_next(m, s)
        with m.Else():
            m.d.sync += [s.s.eq(s.s + 1), s.s_first.eq(0),
                         s.valid.eq(s.valid & (s.s != s.blast)),
                         s.s_end.eq(s.s == s.llast_m1)]

    def _winograd_reads(self, m, s):
        """Winograd: the 4×4 input patches of C tiles, channel by channel, for the input
        transform (into a free half of the V buffer)."""
        C, d = self._cols, self.desc
        with m.State("W_GROUP"):
            # a group: C tiles of one tile row; wait for a free half of the V buffer
            m.d.comb += [self.wgroup.valid.eq(~self.v_full.bit_select(s.vh, 1)),
                         self.wgroup.payload.ty.eq(s.oy), self.wgroup.payload.tx0.eq(s.ox0),
                         self.wgroup.payload.tx_end.eq(s.x_end)]
            with m.If(self.wgroup.valid & self.wgroup.ready):
                m.d.sync += [s.wn.eq(0), self.groups_issued.eq(self.groups_issued + 1)]
                self._walker_reset(m, s, s.row_base, s.goff)
                m.next = "W_READ"
        with m.State("W_READ"):
            self._walker_read(m, s)
            s.events.count("ibuf_reads", C)
            w = s.walker
            patch_last = (w.ky == 3) & (w.kx == 3)
            group_last = patch_last & (s.wn == d.last_N)
            t = self.patch
            m.d.sync += [t.valid.eq(1), t.first.eq((w.ky == 0) & (w.kx == 0)),
                         t.last.eq(patch_last), t.ij.eq(w.ky[:2] * 4 + w.kx[:2]),
                         t.n.eq(s.wn), t.half.eq(s.vh), t.group_last.eq(group_last),
                         self.beat_q1.eq(w.q1)]
            m.d.comb += w.step.eq(1)
            with m.If(patch_last):
                m.d.sync += s.wn.eq(s.wn + 1)
            with m.If(group_last):
                m.d.sync += s.vh.eq(~s.vh)
                m.next = "W_GROUP"
                self._group_next(m, s)
