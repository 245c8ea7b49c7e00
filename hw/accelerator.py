"""The accelerator: a layer engine elaborated from a compiled :class:`~.compiler.Program`.

Block diagram (one engine, layers run one after another from the layer-descriptor ROM)::

    i_image ─► feature-map memory (two regions, C,H,W-major) ◄──────────── PostProcessor
                   │ read port A                                  (bias, requantize, clamp,
                   ▼                                                 fused max-pool, write-back)
              TileLoader ──► input tile buffer: C banks × 2 halves (ping-pong)      ▲
                                   │ im2col addresses, one word per bank             │
                                   ▼                                                  │
              OutputReuseController (im2col address generator + tile loop nest)       │
                   │ x[c] (rotated bank data)     w[r] (weight ROM word)             │
                   ▼                                                                  │
              SystolicArray R×C (output stationary) ── done ──► Drainer ─────────────┘
                                                                  (one result per cycle)

The tile loader fills one half of the input tile buffer while the controller computes from the
other (double buffering). ``o_logits`` streams the last layer's int8 outputs; with ``debug``
high, ``o_debug`` streams after every layer its cycle count (4 bytes, little endian) and its
whole output feature map (C, H, W order), so a testbench checks every layer bit for bit.

Input tile buffer layout (the im2col address generator's contract): input value (n, yi, xi) of a
tile (tile-relative, padding included) lives in bank ``(xi // S) % C`` at word
``((n·Tr_in + yi)·S + xi % S)·Wq + (xi // S) // C``. For output columns c = 0..C−1 of one row and
kernel offset (ky, kx), the C inputs ``xi = (g·C + c)·S + kx`` then fall in C distinct banks
(bank ``(c + q) % C`` with ``q = kx // S``), so one word per bank per cycle feeds the whole
array: no im2col copy, any stride.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .compiler import DESCRIPTOR_FIELDS, Program
from .pe_array import BeatControl, SystolicArray
from .ppu import PostProcessor

__all__ = ["Accelerator", "elaborate"]


def _bits(n):
    return max(1, int(n).bit_length())


class Accelerator(wiring.Component):
    """The top level: image in, logits out, optional per-layer debug dump.

    Parameters
    ----------
    program : Program
        From :func:`cnnforge.hw.compiler.compile_network`; every width, depth and ROM content
        comes from it.

    Members
    -------
    i_image : In(stream.Signature(signed(8)))
        One int8 image (``program.image_size`` beats, C, H, W order). Accepted only while the
        engine is idle; the producer may pause ``valid`` at any time.
    o_logits : Out(stream.Signature(signed(8)))
        ``program.output_size`` int8 outputs of the last layer; the consumer may hold ``ready``
        low at any time.
    o_debug : Out(stream.Signature(8))
        With ``debug`` high: per layer, 4 bytes of its cycle count then its output map.
    debug : In(1)
    cycles : Out(32)
        Engine cycles of the last image (layers only: image load, debug dump and logits output
        not counted). Valid while ``o_logits`` streams and after.
    """

    def __init__(self, program: Program):
        self.program = program
        super().__init__({
            "i_image": In(stream.Signature(signed(8))),
            "o_logits": Out(stream.Signature(signed(8))),
            "o_debug": Out(stream.Signature(8)),
            "debug": In(1),
            "cycles": Out(32),
        })

    def descriptor_layout(self):
        fields = {}
        for name, (is_signed, width) in self.program.descriptor_widths().items():
            fields[name] = signed(width) if is_signed else width
        return data.StructLayout(fields)

    def elaborate(self, platform):
        m = Module()
        prog = self.program
        cfg = prog.config
        R, C = cfg.rows, cfg.cols
        nlayers = len(prog.layers)

        # ---- memories ---------------------------------------------------------------------
        desc_layout = self.descriptor_layout()
        m.submodules.descriptors = desc_rom = memory.Memory(
            shape=desc_layout, depth=nlayers,
            init=[{k: layer.values[k] for k in DESCRIPTOR_FIELDS} for layer in prog.layers])
        desc_port = desc_rom.read_port()
        d = Signal(desc_layout)                       # the running layer's descriptor

        fm_aw = _bits(prog.fm_depth - 1)
        m.submodules.fm = fm = memory.Memory(shape=signed(8), depth=prog.fm_depth, init=[])
        fm_wr = fm.write_port()
        fm_rd_a = fm.read_port()                      # loader, dump, logits
        fm_rd_b = fm.read_port(transparent_for=(fm_wr,))   # PPU pooling read-modify-write

        m.submodules.weights = wrom = memory.Memory(
            shape=data.ArrayLayout(signed(8), R), depth=max(2, len(prog.weights)),
            init=[[int(v) for v in word] for word in prog.weights])
        w_port = wrom.read_port()

        bank_depth = 2 * prog.slot_words
        bank_aw = _bits(bank_depth - 1)
        banks_wr, banks_rd = [], []
        for b in range(C):
            bank = memory.Memory(shape=signed(8), depth=bank_depth, init=[])
            m.submodules[f"ibuf{b}"] = bank
            banks_wr.append(bank.write_port())
            banks_rd.append(bank.read_port())

        m.submodules.array = array = SystolicArray(R, C, prog.acc_width)
        m.submodules.ppu = ppu = PostProcessor(prog.acc_width, prog.params, fm_aw)
        m.d.comb += [ppu.zero_point.eq(d.z_out), ppu.act_min.eq(d.act_min),
                     ppu.act_max.eq(d.act_max),
                     fm_rd_b.addr.eq(ppu.rd_addr), ppu.rd_data.eq(fm_rd_b.data)]

        # ---- sequencer state ----------------------------------------------------------------
        layer = Signal(range(max(2, nlayers)))
        run = Signal()             # pulses when a layer starts: loader and controller begin
        layer_cycles = Signal(32)
        total_cycles = Signal(32)
        loader_done = Signal()
        feeder_done = Signal()
        slot_full = Signal(2)
        slot_set = Signal(2)       # set by the loader this cycle
        slot_clr = Signal(2)       # cleared by the controller this cycle
        m.d.sync += slot_full.eq((slot_full | slot_set) & ~slot_clr)

        # ---- tile loader: feature map -> input tile buffer ----------------------------------
        ld_active = Signal()
        ld_slot = Signal()
        ld_tr, ld_tc = Signal(16), Signal(16)
        ld_row_fm, ld_tile_fm, ld_fm = Signal(signed(fm_aw + 2)), Signal(signed(fm_aw + 2)), \
            Signal(signed(fm_aw + 2))
        ld_y0, ld_x0, ld_y, ld_x = (Signal(signed(16)) for _ in range(4))
        ld_n, ld_yi, ld_xi = Signal(16), Signal(16), Signal(16)
        ld_phase, ld_bank, ld_word = Signal(8), Signal(range(C)), Signal(bank_aw + 1)
        ld_phase_off, ld_rowterm = Signal(bank_aw + 1), Signal(bank_aw + 1)
        ld_loading = Signal()
        # pipeline registers (FM read latency)
        lw_en, lw_bank, lw_addr, lw_inb, lw_last, lw_slot = (Signal(), Signal(range(C)),
                                                            Signal(bank_aw), Signal(), Signal(),
                                                            Signal())

        inb = Signal()
        m.d.comb += inb.eq((ld_y >= 0) & (ld_y < d.H) & (ld_x >= 0) & (ld_x < d.W))
        ld_last_x = ld_xi == d.Tc_in - 1
        ld_last_y = ld_yi == d.Tr_in - 1
        ld_last_n = ld_n == d.N - 1
        ld_last_elem = ld_last_x & ld_last_y & ld_last_n
        ld_last_tile = (ld_tr == d.ntr - 1) & (ld_tc == d.ntc - 1)

        m.d.sync += [lw_en.eq(0), lw_last.eq(0)]
        with m.If(run):
            m.d.sync += [ld_active.eq(1), ld_loading.eq(0), ld_slot.eq(0), ld_tr.eq(0),
                         ld_tc.eq(0), ld_row_fm.eq(d.ld_start), ld_tile_fm.eq(d.ld_start),
                         ld_y0.eq(d.y_start), ld_x0.eq(d.x_start), loader_done.eq(0)]
        with m.Elif(ld_active & ~ld_loading):
            # wait for a free half of the buffer, then start the tile
            with m.If(~slot_full.bit_select(ld_slot, 1) & ~lw_en):
                m.d.sync += [ld_loading.eq(1), ld_fm.eq(ld_tile_fm), ld_y.eq(ld_y0),
                             ld_x.eq(ld_x0), ld_n.eq(0), ld_yi.eq(0), ld_xi.eq(0),
                             ld_phase.eq(0), ld_bank.eq(0), ld_word.eq(0), ld_phase_off.eq(0),
                             ld_rowterm.eq(0)]
        with m.Elif(ld_loading):
            m.d.comb += fm_rd_a.addr.eq(ld_fm)
            m.d.sync += [lw_en.eq(1), lw_bank.eq(ld_bank), lw_inb.eq(inb), lw_slot.eq(ld_slot),
                         lw_addr.eq(Mux(ld_slot, prog.slot_words, 0) + ld_rowterm + ld_phase_off
                                    + ld_word),
                         lw_last.eq(ld_last_elem)]
            with m.If(~ld_last_x):
                m.d.sync += [ld_xi.eq(ld_xi + 1), ld_x.eq(ld_x + 1), ld_fm.eq(ld_fm + 1)]
                with m.If(ld_phase == d.sw - 1):
                    m.d.sync += [ld_phase.eq(0), ld_phase_off.eq(0)]
                    with m.If(ld_bank == C - 1):
                        m.d.sync += [ld_bank.eq(0), ld_word.eq(ld_word + 1)]
                    with m.Else():
                        m.d.sync += ld_bank.eq(ld_bank + 1)
                with m.Else():
                    m.d.sync += [ld_phase.eq(ld_phase + 1), ld_phase_off.eq(ld_phase_off + d.Wq)]
            with m.Else():
                m.d.sync += [ld_xi.eq(0), ld_x.eq(ld_x0), ld_phase.eq(0), ld_phase_off.eq(0),
                             ld_bank.eq(0), ld_word.eq(0),
                             ld_rowterm.eq(ld_rowterm + d.row_words)]
                with m.If(~ld_last_y):
                    m.d.sync += [ld_yi.eq(ld_yi + 1), ld_y.eq(ld_y + 1),
                                 ld_fm.eq(ld_fm + d.ld_row_step)]
                with m.Else():
                    m.d.sync += [ld_yi.eq(0), ld_y.eq(ld_y0), ld_n.eq(ld_n + 1),
                                 ld_fm.eq(ld_fm + d.ld_chan_step)]
            with m.If(ld_last_elem):
                m.d.sync += [ld_loading.eq(0), ld_slot.eq(~ld_slot)]
                with m.If(ld_last_tile):
                    m.d.sync += [ld_active.eq(0), loader_done.eq(1)]
                with m.Elif(ld_tc == d.ntc - 1):
                    m.d.sync += [ld_tc.eq(0), ld_tr.eq(ld_tr + 1),
                                 ld_row_fm.eq(ld_row_fm + d.ld_tile_row_step),
                                 ld_tile_fm.eq(ld_row_fm + d.ld_tile_row_step),
                                 ld_x0.eq(d.x_start), ld_y0.eq(ld_y0 + d.tile_y_step)]
                with m.Else():
                    m.d.sync += [ld_tc.eq(ld_tc + 1),
                                 ld_tile_fm.eq(ld_tile_fm + d.ld_tile_col_step),
                                 ld_x0.eq(ld_x0 + d.tile_x_step)]
        # write stage
        for b in range(C):
            m.d.comb += [banks_wr[b].addr.eq(lw_addr),
                         banks_wr[b].data.eq(Mux(lw_inb, fm_rd_a.data, d.z_in)),
                         banks_wr[b].en.eq(lw_en & (lw_bank == b))]
        with m.If(lw_en & lw_last):
            m.d.comb += slot_set.eq(Mux(lw_slot, 0b10, 0b01))

        # ---- output-reuse controller + im2col address generator ------------------------------
        meta_layout = data.StructLayout({
            "m0": 16, "oy": 16, "ox0": 16, "x_end": 16, "out_base": fm_aw + 1,
        })
        m.submodules.meta = meta_fifo = fifo.SyncFIFOBuffered(width=meta_layout.size, depth=4)
        fd_active, fd_running = Signal(), Signal()
        fd_slot = Signal()
        fd_tr, fd_tc, fd_tr0, fd_tc0 = Signal(16), Signal(16), Signal(16), Signal(16)
        fd_rows, fd_groups = Signal(16), Signal(16)
        fd_mb, fd_row, fd_g, fd_m0 = Signal(16), Signal(16), Signal(16), Signal(16)
        fd_s = Signal(16)
        fd_n, fd_ky, fd_kx = Signal(16), Signal(8), Signal(8)
        fd_phase, fd_phase_off, fd_q0, fd_q1 = Signal(8), Signal(bank_aw + 1), Signal(8), \
            Signal(range(C))
        fd_rowterm, fd_row_base = Signal(bank_aw + 1), Signal(bank_aw + 1)
        fd_w, fd_w_pass = Signal(_bits(len(prog.weights)) + 1), Signal(_bits(len(prog.weights)) + 1)
        fd_ox0 = Signal(16)
        passes_issued, passes_drained = Signal(24), Signal(24)

        beat = Signal(BeatControl)
        beat_q1 = Signal(range(C))
        fd_last_kx = fd_kx == d.kw - 1
        fd_last_ky = fd_ky == d.kh - 1
        fd_valid_beat = fd_s < d.K
        fd_pass_end = fd_s == d.L - 1
        fd_last_g = fd_g == fd_groups - 1
        fd_last_row = fd_row == fd_rows - 1
        fd_last_mb = fd_mb == d.MB - 1
        fd_last_tile = (fd_tr == d.ntr - 1) & (fd_tc == d.ntc - 1)

        m.d.sync += beat.eq(0)
        with m.If(run):
            m.d.sync += [fd_active.eq(1), fd_running.eq(0), fd_slot.eq(0), fd_tr.eq(0),
                         fd_tc.eq(0), fd_tr0.eq(0), fd_tc0.eq(0), feeder_done.eq(0),
                         passes_issued.eq(0)]
        with m.Elif(fd_active & ~fd_running):
            with m.If(slot_full.bit_select(fd_slot, 1)):
                m.d.sync += [fd_running.eq(1), fd_mb.eq(0), fd_row.eq(0), fd_g.eq(0),
                             fd_m0.eq(0), fd_s.eq(0), fd_n.eq(0), fd_ky.eq(0), fd_kx.eq(0),
                             fd_phase.eq(0), fd_phase_off.eq(0), fd_q0.eq(0), fd_q1.eq(0),
                             fd_rowterm.eq(0), fd_row_base.eq(0), fd_ox0.eq(fd_tc0),
                             fd_w.eq(d.w_base), fd_w_pass.eq(d.w_base),
                             fd_rows.eq(Mux(fd_tr == d.ntr - 1, d.rows_last, d.Tr)),
                             fd_groups.eq(Mux(fd_tc == d.ntc - 1, d.groups_last,
                                              d.groups_full))]
        with m.Elif(fd_running):
            # addresses for this beat
            for b in range(C):
                m.d.comb += banks_rd[b].addr.eq(
                    Mux(fd_slot, prog.slot_words, 0) + fd_rowterm + fd_phase_off + fd_g
                    + fd_q0 + (b < fd_q1))
            m.d.comb += w_port.addr.eq(fd_w)
            m.d.sync += [beat.valid.eq(fd_valid_beat), beat.first.eq(fd_s == 0),
                         beat.last.eq(fd_s == d.K - 1), beat_q1.eq(fd_q1)]
            # metadata of the pass, at its first beat
            oy = fd_tr0 + fd_row
            m.d.comb += meta_fifo.w_en.eq(fd_s == 0)
            meta_w = Signal(meta_layout)
            m.d.comb += [meta_w.m0.eq(fd_m0), meta_w.oy.eq(oy), meta_w.ox0.eq(fd_ox0),
                         meta_w.x_end.eq(Mux(fd_tc0 + d.Tc < d.OW, fd_tc0 + d.Tc, d.OW)),
                         meta_w.out_base.eq(d.dst + fd_m0 * d.PHW + (oy >> d.pshift) * d.PW),
                         meta_fifo.w_data.eq(meta_w)]
            # advance k = (n, ky, kx)
            with m.If(fd_valid_beat):
                m.d.sync += fd_w.eq(fd_w + 1)
                with m.If(~fd_last_kx):
                    m.d.sync += fd_kx.eq(fd_kx + 1)
                    with m.If(fd_phase == d.sw - 1):
                        m.d.sync += [fd_phase.eq(0), fd_phase_off.eq(0)]
                        with m.If(fd_q1 == C - 1):
                            m.d.sync += [fd_q1.eq(0), fd_q0.eq(fd_q0 + 1)]
                        with m.Else():
                            m.d.sync += fd_q1.eq(fd_q1 + 1)
                    with m.Else():
                        m.d.sync += [fd_phase.eq(fd_phase + 1),
                                     fd_phase_off.eq(fd_phase_off + d.Wq)]
                with m.Else():
                    m.d.sync += [fd_kx.eq(0), fd_phase.eq(0), fd_phase_off.eq(0), fd_q0.eq(0),
                                 fd_q1.eq(0)]
                    with m.If(~fd_last_ky):
                        m.d.sync += [fd_ky.eq(fd_ky + 1),
                                     fd_rowterm.eq(fd_rowterm + d.fd_ky_step)]
                    with m.Else():
                        m.d.sync += [fd_ky.eq(0), fd_n.eq(fd_n + 1),
                                     fd_rowterm.eq(fd_rowterm + d.fd_chan_step)]
            # end of a pass: next column group / row / output-channel block / tile
            with m.If(fd_pass_end):
                m.d.sync += [fd_s.eq(0), fd_n.eq(0), fd_ky.eq(0), fd_kx.eq(0), fd_phase.eq(0),
                             fd_phase_off.eq(0), fd_q0.eq(0), fd_q1.eq(0),
                             passes_issued.eq(passes_issued + 1)]
                with m.If(~fd_last_g):
                    m.d.sync += [fd_g.eq(fd_g + 1), fd_ox0.eq(fd_ox0 + C),
                                 fd_rowterm.eq(fd_row_base), fd_w.eq(fd_w_pass)]
                with m.Elif(~fd_last_row):
                    m.d.sync += [fd_g.eq(0), fd_ox0.eq(fd_tc0), fd_row.eq(fd_row + 1),
                                 fd_row_base.eq(fd_row_base + d.fd_row_step),
                                 fd_rowterm.eq(fd_row_base + d.fd_row_step), fd_w.eq(fd_w_pass)]
                with m.Elif(~fd_last_mb):
                    m.d.sync += [fd_g.eq(0), fd_ox0.eq(fd_tc0), fd_row.eq(0), fd_row_base.eq(0),
                                 fd_rowterm.eq(0), fd_mb.eq(fd_mb + 1), fd_m0.eq(fd_m0 + R),
                                 fd_w.eq(fd_w_pass + d.K), fd_w_pass.eq(fd_w_pass + d.K)]
                with m.Else():
                    # tile finished: release its half of the buffer
                    m.d.comb += slot_clr.eq(Mux(fd_slot, 0b10, 0b01))
                    m.d.sync += [fd_running.eq(0), fd_slot.eq(~fd_slot)]
                    with m.If(fd_last_tile):
                        m.d.sync += [fd_active.eq(0), feeder_done.eq(1)]
                    with m.Elif(fd_tc == d.ntc - 1):
                        m.d.sync += [fd_tc.eq(0), fd_tc0.eq(0), fd_tr.eq(fd_tr + 1),
                                     fd_tr0.eq(fd_tr0 + d.Tr)]
                    with m.Else():
                        m.d.sync += [fd_tc.eq(fd_tc + 1), fd_tc0.eq(fd_tc0 + d.Tc)]
            with m.Else():
                m.d.sync += fd_s.eq(fd_s + 1)

        # edge of the array: memory data arrives one cycle after the addresses
        bank_data = Array(port.data for port in banks_rd)
        for c in range(C):
            sel = Signal(range(2 * C), name=f"x_sel{c}")
            m.d.comb += sel.eq(beat_q1 + c)
            m.d.comb += array.x_edge[c].eq(bank_data[Mux(sel >= C, sel - C, sel)])
        for r in range(R):
            m.d.comb += array.w_edge[r].eq(w_port.data[r])
        m.d.comb += array.ctl_edge.eq(beat)

        # ---- drainer: one finished accumulator per cycle into the post-processor ------------
        dr_active = Signal()
        dr_r, dr_c = Signal(range(max(2, R))), Signal(range(max(2, C)))
        dr_meta = Signal(meta_layout)
        dr_row_base = Signal(fm_aw + 1)
        results = Array(Array(array.results[r][c] for c in range(C)) for r in range(R))
        with m.If(array.done):
            m.d.comb += meta_fifo.r_en.eq(1)
            head = data.View(meta_layout, meta_fifo.r_data)
            m.d.sync += [dr_active.eq(1), dr_r.eq(0), dr_c.eq(0), dr_meta.eq(head),
                         dr_row_base.eq(head.out_base)]
        with m.Elif(dr_active):
            with m.If(dr_c == C - 1):
                m.d.sync += [dr_c.eq(0), dr_r.eq(dr_r + 1), dr_row_base.eq(dr_row_base + d.PHW)]
                with m.If(dr_r == R - 1):
                    m.d.sync += [dr_active.eq(0), passes_drained.eq(passes_drained + 1)]
            with m.Else():
                m.d.sync += dr_c.eq(dr_c + 1)
        ch = Signal(16)
        ox = Signal(16)
        m.d.comb += [ch.eq(dr_meta.m0 + dr_r), ox.eq(dr_meta.ox0 + dr_c)]
        pool_mask = Signal(8)
        m.d.comb += pool_mask.eq((Const(1, 8) << d.pshift) - 1)
        m.d.comb += [
            ppu.valid.eq(dr_active & (ch < d.M) & (ox < dr_meta.x_end)
                         & (dr_meta.oy < d.oy_lim) & (ox < d.ox_lim)),
            ppu.acc.eq(results[dr_r][dr_c]),
            ppu.channel.eq(d.ch_base + ch),
            ppu.addr.eq(dr_row_base + (ox >> d.pshift)),
            ppu.first.eq(((dr_meta.oy & pool_mask) == 0) & ((ox & pool_mask) == 0)),
        ]
        with m.If(run):
            m.d.sync += passes_drained.eq(0)

        # ---- sequencer -------------------------------------------------------------------
        img_count = Signal(range(max(2, prog.image_size + 1)))
        out_idx = Signal(16)
        out_total = Signal(16)
        out_base = Signal(fm_aw + 1)
        out_valid = Signal()
        out_data = Signal(8)
        out_wait = Signal()          # read issued, data arrives next cycle
        hdr = Signal(2)
        to_logits = Signal()
        m.d.comb += [self.o_logits.payload.eq(out_data), self.o_debug.payload.eq(out_data),
                     self.o_logits.valid.eq(out_valid & to_logits),
                     self.o_debug.valid.eq(out_valid & ~to_logits)]
        out_ready = Mux(to_logits, self.o_logits.ready, self.o_debug.ready)
        m.d.comb += self.cycles.eq(total_cycles)

        def stream_out(m, next_state):
            """Read ``out_total`` bytes from the FM at ``out_base`` and send them."""
            with m.If(out_valid):
                with m.If(out_ready):
                    m.d.sync += [out_valid.eq(0), out_idx.eq(out_idx + 1)]
                    with m.If(out_idx == out_total - 1):
                        m.next = next_state
            with m.Elif(out_wait):
                m.d.sync += [out_valid.eq(1), out_data.eq(fm_rd_a.data), out_wait.eq(0)]
            with m.Else():
                m.d.comb += fm_rd_a.addr.eq(out_base + out_idx)
                m.d.sync += out_wait.eq(1)

        layer_busy = (~loader_done | ~feeder_done | (passes_issued != passes_drained)
                      | dr_active | ppu.busy | array.done)
        with m.FSM():
            with m.State("LOAD_IMAGE"):
                m.d.comb += [self.i_image.ready.eq(1), fm_wr.addr.eq(img_count),
                             fm_wr.data.eq(self.i_image.payload),
                             fm_wr.en.eq(self.i_image.valid)]
                with m.If(self.i_image.valid):
                    m.d.sync += img_count.eq(img_count + 1)
                    with m.If(img_count == prog.image_size - 1):
                        m.d.sync += [img_count.eq(0), layer.eq(0), total_cycles.eq(0)]
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += desc_port.addr.eq(layer)
                m.next = "START"
            with m.State("START"):
                m.d.sync += [d.eq(desc_port.data), layer_cycles.eq(0)]
                m.next = "KICK"
            with m.State("KICK"):
                m.d.comb += run.eq(1)
                m.d.sync += layer_cycles.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [fm_wr.addr.eq(ppu.wr_addr), fm_wr.data.eq(ppu.wr_data),
                             fm_wr.en.eq(ppu.wr_en)]
                m.d.sync += layer_cycles.eq(layer_cycles + 1)
                with m.If(~layer_busy):
                    m.d.sync += [total_cycles.eq(total_cycles + layer_cycles),
                                 out_base.eq(d.dst), out_total.eq(d.out_size), out_idx.eq(0),
                                 hdr.eq(0), to_logits.eq(0)]
                    with m.If(self.debug):
                        m.next = "DUMP_HEADER"
                    with m.Else():
                        m.next = "NEXT"
            with m.State("DUMP_HEADER"):
                with m.If(out_valid):
                    with m.If(out_ready):
                        m.d.sync += [out_valid.eq(0), hdr.eq(hdr + 1)]
                        with m.If(hdr == 3):
                            m.next = "DUMP"
                with m.Else():
                    m.d.sync += [out_valid.eq(1),
                                 out_data.eq(layer_cycles.word_select(hdr, 8))]
            with m.State("DUMP"):
                stream_out(m, "NEXT")
            with m.State("NEXT"):
                with m.If(layer == nlayers - 1):
                    m.d.sync += [out_base.eq(d.dst), out_total.eq(prog.output_size),
                                 out_idx.eq(0), to_logits.eq(1)]
                    m.next = "OUTPUT"
                with m.Else():
                    m.d.sync += layer.eq(layer + 1)
                    m.next = "FETCH"
            with m.State("OUTPUT"):
                stream_out(m, "LOAD_IMAGE")
        return m


def elaborate(qnet, config=None, **kwargs):
    """Compile ``qnet`` for ``config`` and return ``(Accelerator, Program)``.

    Raises ``NetworkError`` / ``ConfigError`` (see :func:`compile_network`)."""
    from .compiler import compile_network
    program = compile_network(qnet, config, **kwargs)
    return Accelerator(program), program
