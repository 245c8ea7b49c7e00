"""The accelerator: a layer engine elaborated from a compiled :class:`~.compiler.Program`.

Block diagram (one engine, layers run one after another from the layer-descriptor ROM)::

    i_image ─► feature-map memory (two regions, C,H,W-major) ◄──────────── PostProcessor
                   │ read port A                                  (bias, requantize, clamp,
                   ▼                                                 fused max-pool, write-back)
              tile loader ──► input tile buffer: banks × 2 halves (ping-pong)          ▲
                                   │ one word per bank per cycle                       │
                                   ▼                                                    │
              dataflow controller: OR / IR / WR (tile loop nest, im2col addresses)     │
                   │ streamed operands, preloads          weight ROM                   │
                   ▼                                                                    │
              SystolicArray R×C ── OS: results ──────────────► drainer ────────────────┤
                               └─ IS/WS: column sums ─► partial-sum buffer ─► drainer ─┘

Dataflows (one per layer, from its descriptor; see ``docs/dataflows.md``):

* **OR** (output reuse, output stationary): a pass computes R output channels × C output pixels
  of one row; inputs (im2col from the x-banked tile buffer) and weights stream, sums stay in
  the PEs.
* **IR** (input reuse, input stationary): R reduction steps × C pixels of inputs are preloaded
  into the PEs; the weights of all M output channels stream past them (one channel per beat);
  column sums accumulate over the reduction blocks in the partial-sum buffer.
* **WR** (weight reuse, weight stationary): R input channels × C output channels of weights are
  preloaded; every pixel of the tile streams past them (R channels per beat from the
  channel-banked tile buffer); column sums accumulate in the partial-sum buffer.

The tile loader fills one half of the input tile buffer while the controller computes from the
other (double buffering); the partial-sum buffer is double-buffered too, so draining a group of
outputs overlaps computing the next. ``o_logits`` streams the last layer's int8 outputs; with
``debug`` high, ``o_debug`` streams after every layer its counters (:data:`COUNTERS`, 4 bytes
each, little endian) and its whole output feature map (C, H, W order), so a testbench checks
every layer bit for bit and reads the measured cycles and buffer accesses.

Input tile buffer layouts (the address generators' contract):

* x-banked (OR, IR): input (n, yi, xi) of a tile (tile-relative, padding included) lives in bank
  ``(xi // S) % C`` at word ``((n·Tr_in + yi)·S + xi % S)·Wq + (xi // S) // C``. For output
  columns c = 0..C−1 of one row and kernel offset (ky, kx), the C inputs
  ``xi = (g·C + c)·S + kx`` fall in C distinct banks (bank ``(c + q) % C``, ``q = kx // S``), so
  one word per bank per cycle feeds the whole array: no im2col copy, any stride.
* channel-banked (WR): input (n, yi, xi) in bank ``n % R`` at word
  ``(n // R)·Tr_in·Tc_in + yi·Tc_in + xi``: R consecutive channels of one pixel, one per bank.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.compiler.program import DESCRIPTOR_FIELDS, Program
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.rtl.pe_array import BeatControl, SystolicArray
from cnnforge.hw.rtl.ppu import PostProcessor

__all__ = ["Accelerator", "COUNTERS", "elaborate"]

#: Per-layer counters sent on the debug stream, in this order (32 bits each).
COUNTERS = ("cycles", "ibuf_reads", "ibuf_writes", "weight_reads", "obuf_reads", "obuf_writes",
            "fm_reads", "fm_writes")


def _bits(n):
    return max(1, int(n).bit_length())


class Accelerator(wiring.Component):
    """The top level: image in, logits out, optional per-layer debug dump.

    Parameters
    ----------
    program : Program
        From :func:`cnnforge.hw.compiler.program.compile_network`; every width, depth and ROM content
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
        With ``debug`` high: per layer, the :data:`COUNTERS` (4 bytes each) then its output map.
    debug : In(1)
    cycles : Out(32)
        Engine cycles of the last image (from the image's last beat to the logits: layers and
        sequencing, not the debug dump). Valid while ``o_logits`` streams and after.
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
        NB = prog.input_banks
        nlayers = len(prog.layers)
        stationary = prog.stationary
        # hardware for element-wise adds and depthwise channel blocks only where a layer uses it
        has_add = any(layer.values["df"] == Dataflow.ADD for layer in prog.layers)
        has_dw = any(layer.values.get("dw") for layer in prog.layers)

        def most(*names):
            """The largest value of these descriptor fields over the network's layers."""
            return max(layer.values[n] for layer in prog.layers for n in names)

        def counter(top):
            """A loop counter for values 0..top (as narrow as the network allows: shorter
            end-of-loop comparisons)."""
            return Signal(range(max(2, top + 1)))

        # ---- memories ---------------------------------------------------------------------
        desc_layout = self.descriptor_layout()
        m.submodules.descriptors = desc_rom = memory.Memory(
            shape=desc_layout, depth=nlayers,
            init=[{k: layer.values[k] for k in DESCRIPTOR_FIELDS} for layer in prog.layers])
        # the running layer's descriptor: the port reads only in FETCH and holds its data
        # while the layer runs (no second copy in a register)
        desc_port = desc_rom.read_port()
        m.d.comb += desc_port.en.eq(0)
        d = desc_port.data

        fm_aw = _bits(prog.fm_depth - 1)
        m.submodules.fm = fm = memory.Memory(shape=signed(8), depth=prog.fm_depth, init=[])
        fm_wr = fm.write_port()
        fm_rd_a = fm.read_port()                      # loader, dump, logits
        fm_rd_b = fm.read_port()                      # PPU pooling reads, add's 2nd input

        m.submodules.weights = wrom = memory.Memory(
            shape=data.ArrayLayout(signed(prog.w_width), cfg.lanes),
            depth=max(2, len(prog.weights)),
            init=[[int(v) for v in word] for word in prog.weights])
        w_port = wrom.read_port()
        w_aw = _bits(len(prog.weights)) + 1

        bank_depth = 2 * prog.slot_words
        bank_aw = _bits(bank_depth - 1) + 1
        # the tile buffers' read data arrive in the cycle after their address (bank_raddr):
        # from a synchronous port (block RAM), or, with cfg.lutram_buffers, from an asynchronous
        # read behind a registered address (distributed RAM: the address arithmetic is then
        # not in front of the RAM). The loader never writes the half being read, so both read
        # the same values.
        banks_wr, banks_rd, bank_raddr = [], [], []
        for b in range(NB):
            bank = memory.Memory(shape=signed(8), depth=bank_depth, init=[])
            m.submodules[f"ibuf{b}"] = bank
            banks_wr.append(bank.write_port())
            bank_raddr.append(Signal(bank_aw, name=f"ibuf{b}_raddr"))
            if cfg.lutram_buffers:
                banks_rd.append(bank.read_port(domain="comb"))
                raddr_q = Signal(bank_aw, name=f"ibuf{b}_raddr_q")
                m.d.sync += raddr_q.eq(bank_raddr[b])
                m.d.comb += banks_rd[b].addr.eq(raddr_q)
            else:
                banks_rd.append(bank.read_port())
                m.d.comb += banks_rd[b].addr.eq(bank_raddr[b])

        m.submodules.array = array = SystolicArray(R, C, prog.acc_width, prog.w_width,
                                                   prog.x_width)
        ppu_width = max(prog.acc_width, prog.y4_width - 2)
        m.submodules.ppu = ppu = PostProcessor(ppu_width, prog.params, fm_aw, prog.rounding)
        m.d.comb += [ppu.zero_point.eq(d.z_out), ppu.act_min.eq(d.act_min),
                     ppu.act_max.eq(d.act_max),
                     fm_rd_b.addr.eq(ppu.rd_addr), ppu.rd_data.eq(fm_rd_b.data),
                     array.mode.eq((d.df == 1) | (d.df == 2))]
        is_or, is_ir, is_wr, is_wino = d.df == 0, d.df == 1, d.df == 2, d.df == Dataflow.WINOGRAD
        is_add = (d.df == Dataflow.ADD) if has_add else Const(0, 1)
        wino = any(layer.values["df"] == Dataflow.WINOGRAD for layer in prog.layers)

        # ---- sequencer state ----------------------------------------------------------------
        layer = Signal(range(max(2, nlayers)))
        run = Signal()             # pulses when a layer starts: loader and controller begin
        counters = {name: Signal(32, name=f"n_{name}") for name in COUNTERS}
        total_cycles = Signal(32)
        loader_done = Signal()
        feeder_done = Signal()
        slot_full = Signal(2)
        slot_set = Signal(2)       # set by the loader this cycle
        slot_clr = Signal(2)       # cleared by the controller this cycle
        m.d.sync += slot_full.eq((slot_full | slot_set) & ~slot_clr)

        increments = {name: [] for name in COUNTERS}

        def count(name, amount=1):
            """Add ``amount`` to a counter in the cycles where the enclosing conditions hold
            (several places may count the same counter in one cycle)."""
            inc = Signal(range(amount + 1), name=f"inc_{name}_{len(increments[name])}")
            m.d.comb += inc.eq(amount)
            increments[name].append(inc)

        # ---- tile loader: feature map -> input tile buffer ----------------------------------
        ld_active = Signal()
        ld_slot = Signal()
        ld_tr, ld_tc = counter(most("ntr")), counter(most("ntc"))
        ld_row_fm, ld_tile_fm, ld_fm = (Signal(signed(fm_aw + 2)) for _ in range(3))
        ld_y0, ld_x0, ld_y, ld_x = (Signal(signed(16)) for _ in range(4))
        ld_n, ld_yi, ld_xi = counter(most("N")), counter(most("Tr_in")), counter(most("Tc_in"))
        ld_phase, ld_bank, ld_word = Signal(8), Signal(range(max(2, NB))), Signal(bank_aw)
        ld_phase_off, ld_rowterm = Signal(bank_aw), Signal(bank_aw)
        ld_loading = Signal()
        lw_en, lw_bank, lw_addr, lw_inb, lw_last, lw_slot = (
            Signal(), Signal(range(max(2, NB))), Signal(bank_aw), Signal(), Signal(), Signal())

        inb = Signal()
        m.d.comb += inb.eq((ld_y >= 0) & (ld_y < d.H) & (ld_x >= 0) & (ld_x < d.W))
        ld_last_x = ld_xi == d.last_Tc_in
        ld_last_y = ld_yi == d.last_Tr_in
        ld_last_n = ld_n == d.last_N
        ld_last_elem = ld_last_x & ld_last_y & ld_last_n
        ld_last_tile = (ld_tr == d.last_ntr) & (ld_tc == d.last_ntc)

        m.d.sync += [lw_en.eq(0), lw_last.eq(0)]
        with m.If(run):
            # (an element-wise add reads the feature map itself: no tiles to load)
            m.d.sync += [ld_active.eq(~is_add), ld_loading.eq(0), ld_slot.eq(0), ld_tr.eq(0),
                         ld_tc.eq(0), ld_row_fm.eq(d.ld_start), ld_tile_fm.eq(d.ld_start),
                         ld_y0.eq(d.y_start), ld_x0.eq(d.x_start), loader_done.eq(is_add)]
        with m.Elif(ld_active & ~ld_loading):
            # wait for a free half of the buffer, then start the tile
            with m.If(~slot_full.bit_select(ld_slot, 1) & ~lw_en):
                m.d.sync += [ld_loading.eq(1), ld_fm.eq(ld_tile_fm), ld_y.eq(ld_y0),
                             ld_x.eq(ld_x0), ld_n.eq(0), ld_yi.eq(0), ld_xi.eq(0),
                             ld_phase.eq(0), ld_bank.eq(0), ld_word.eq(0), ld_phase_off.eq(0),
                             ld_rowterm.eq(0)]
        with m.Elif(ld_loading):
            m.d.comb += fm_rd_a.addr.eq(ld_fm)
            with m.If(inb):
                count("fm_reads")
            m.d.sync += [lw_en.eq(1), lw_bank.eq(ld_bank), lw_inb.eq(inb), lw_slot.eq(ld_slot),
                         lw_addr.eq(Mux(ld_slot, prog.slot_words, 0) + ld_rowterm + ld_phase_off
                                    + ld_word),
                         lw_last.eq(ld_last_elem)]
            with m.If(~ld_last_x):
                m.d.sync += [ld_xi.eq(ld_xi + 1), ld_x.eq(ld_x + 1), ld_fm.eq(ld_fm + 1)]
                with m.If(is_wr):
                    m.d.sync += ld_word.eq(ld_word + 1)
                with m.Elif(ld_phase == d.last_sw):
                    m.d.sync += [ld_phase.eq(0), ld_phase_off.eq(0)]
                    with m.If(ld_bank == C - 1):
                        m.d.sync += [ld_bank.eq(0), ld_word.eq(ld_word + 1)]
                    with m.Else():
                        m.d.sync += ld_bank.eq(ld_bank + 1)
                with m.Else():
                    m.d.sync += [ld_phase.eq(ld_phase + 1), ld_phase_off.eq(ld_phase_off + d.Wq)]
            with m.Else():
                m.d.sync += [ld_xi.eq(0), ld_x.eq(ld_x0)]
                with m.If(~ld_last_y):
                    m.d.sync += [ld_yi.eq(ld_yi + 1), ld_y.eq(ld_y + 1),
                                 ld_fm.eq(ld_fm + d.ld_row_step)]
                with m.Else():
                    m.d.sync += [ld_yi.eq(0), ld_y.eq(ld_y0), ld_n.eq(ld_n + 1),
                                 ld_fm.eq(ld_fm + d.ld_chan_step)]
                with m.If(is_wr):
                    # channel-banked: next row continues the word; next channel: next bank
                    with m.If(~ld_last_y):
                        m.d.sync += ld_word.eq(ld_word + 1)
                    with m.Elif(ld_bank == R - 1):
                        m.d.sync += [ld_bank.eq(0), ld_rowterm.eq(ld_rowterm + d.chan_words),
                                     ld_word.eq(ld_rowterm + d.chan_words)]
                    with m.Else():
                        m.d.sync += [ld_bank.eq(ld_bank + 1), ld_word.eq(ld_rowterm)]
                with m.Else():
                    m.d.sync += [ld_phase.eq(0), ld_phase_off.eq(0), ld_bank.eq(0),
                                 ld_word.eq(0), ld_rowterm.eq(ld_rowterm + d.row_words)]
            with m.If(ld_last_elem):
                m.d.sync += [ld_loading.eq(0), ld_slot.eq(~ld_slot)]
                with m.If(ld_last_tile):
                    m.d.sync += [ld_active.eq(0), loader_done.eq(1)]
                with m.Elif(ld_tc == d.last_ntc):
                    m.d.sync += [ld_tc.eq(0), ld_tr.eq(ld_tr + 1),
                                 ld_row_fm.eq(ld_row_fm + d.ld_tile_row_step),
                                 ld_tile_fm.eq(ld_row_fm + d.ld_tile_row_step),
                                 ld_x0.eq(d.x_start), ld_y0.eq(ld_y0 + d.tile_y_step)]
                with m.Else():
                    m.d.sync += [ld_tc.eq(ld_tc + 1),
                                 ld_tile_fm.eq(ld_tile_fm + d.ld_tile_col_step),
                                 ld_x0.eq(ld_x0 + d.tile_x_step)]
        # in the WR layout the word is absolute (ld_word), not an offset from ld_rowterm
        lw_addr_wr = Signal(bank_aw)
        m.d.comb += lw_addr_wr.eq(Mux(ld_slot, prog.slot_words, 0) + ld_word)
        with m.If(ld_loading & is_wr):
            m.d.sync += lw_addr.eq(lw_addr_wr)
        # the feature map's data (or the padding value) is registered with its write before the
        # tile buffer: the block RAM's clock-to-out is not in front of the buffer's write
        lw2_en, lw2_bank, lw2_addr, lw2_last, lw2_slot = (
            Signal(), Signal(range(max(2, NB))), Signal(bank_aw), Signal(), Signal())
        lw2_data = Signal(signed(8))
        m.d.sync += [lw2_en.eq(lw_en), lw2_bank.eq(lw_bank), lw2_addr.eq(lw_addr),
                     lw2_last.eq(lw_last), lw2_slot.eq(lw_slot),
                     lw2_data.eq(Mux(lw_inb, fm_rd_a.data, d.z_in))]
        # write stage
        for b in range(NB):
            m.d.comb += [banks_wr[b].addr.eq(lw2_addr), banks_wr[b].data.eq(lw2_data),
                         banks_wr[b].en.eq(lw2_en & (lw2_bank == b))]
        with m.If(lw2_en):
            count("ibuf_writes")
        with m.If(lw2_last):
            m.d.comb += slot_set.eq(Mux(lw2_slot, 0b10, 0b01))

        # ---- dataflow controller -------------------------------------------------------------
        # a pass's / group's output coordinates, as wide as the network needs (the FIFO and the
        # drainers' copies are flip-flops): first channel m0 < M + R, output row < OH + Tr,
        # first column < OW + Tc + C, x_end <= OW, rows <= Tr, cols <= Tc
        meta_layout = data.StructLayout({
            "m0": _bits(most("M") + max(R, C)), "oy": _bits(most("OH") + most("Tr")),
            "ox0": _bits(most("OW") + most("Tc") + C), "x_end": _bits(most("OW")),
            "rows": _bits(most("Tr")), "cols": _bits(most("Tc")), "out_base": fm_aw + 1,
        })
        m.submodules.meta = meta_fifo = fifo.SyncFIFOBuffered(width=meta_layout.size, depth=4)
        meta_w = Signal(meta_layout)
        m.d.comb += meta_fifo.w_data.eq(meta_w)

        fd_slot = Signal()
        fd_tr, fd_tc = counter(most("ntr")), counter(most("ntc"))
        fd_tr0, fd_tc0 = counter(most("OH") + most("Tr")), counter(most("OW") + most("Tc"))
        fd_rows, fd_cols = counter(most("Tr", "rows_last")), counter(most("Tc", "cols_last"))
        # the tile's last output row and last column group (rows − 1, groups − 1)
        fd_rlast = counter(most("Tr", "rows_last"))
        fd_glast = counter(most("groups_full", "groups_last"))
        # whether the current beat is valid (OR: fd_s < K; IR/WR streams: fd_s < fd_beats), kept
        # one beat ahead; OR: the weight pointer of the next block of R channels (fd_w_pass + K)
        fd_valid, fd_w_mb = Signal(), Signal(w_aw)
        fd_mb, fd_row, fd_g = counter(most("MB")), Signal.like(fd_rlast), Signal.like(fd_glast)
        fd_m0 = counter(most("M") + max(R, C))
        # beats of a pass (L) or of a stream (M, the tile's pixels, Lmin)
        beats = max(most("L", "K", "M", "Lmin"),
                    max(layer.values["Tr"] * layer.values["Tc"] for layer in prog.layers))
        fd_s, fd_beats = counter(beats), counter(beats)
        # IR / WR streams: the last valid beat (beats − 1) and the block's last beat (length − 1)
        fd_blast, fd_llast = counter(beats), counter(beats)
        fd_kb = counter(most("KB"))
        fd_ox0 = counter(most("OW") + most("Tc") + C)
        fd_row_base = Signal(bank_aw)
        # depthwise: the m-block's first channel in the tile buffer
        fd_chan0 = Signal(bank_aw) if has_dw else Const(0, bank_aw)

        def set_chan0(value):
            return [fd_chan0.eq(value)] if has_dw else []
        fd_w, fd_w_pass = Signal(w_aw), Signal(w_aw)
        # passes and groups issued and drained, modulo 2^8: at most a few are in flight (the
        # metadata FIFO's depth), so equal modulo 2^8 is equal
        passes_issued, passes_drained = Signal(8), Signal(8)
        slot_base = Mux(fd_slot, prog.slot_words, 0)
        # element-wise add: element index, and the pipeline's valid flags (FM read, table read)
        ad_i = Signal(range(max(2, prog.fm_depth + 1)))
        ad_v1, ad_v2 = Signal(), Signal()
        m.d.sync += [ad_v1.eq(0), ad_v2.eq(ad_v1)]

        # im2col walker over k = (n, ky, kx) in the x-banked layout (OR feed, IR preload). The
        # bank address slot_base + rowterm + phase·Wq + g + q0 + (b < q1) is kept as two
        # registers, wk_rowterm (row and channel) and wk_col = wk_off + phase·Wq + q0 (column;
        # wk_off = slot_base + g is fixed for a walk), so that one adder with a carry-in sits in
        # front of the tile buffers
        wk_k, wk_ky, wk_kx = Signal(16), counter(most("kh")), counter(most("kw"))
        wk_phase, wk_q0, wk_q1 = Signal(8), Signal(8), Signal(range(max(2, C)))
        wk_rowterm, wk_col, wk_off = Signal(bank_aw), Signal(bank_aw), Signal(bank_aw)
        walker_addr = [Signal(bank_aw, name=f"walker_addr{b}") for b in range(C)]
        for b in range(C):
            m.d.comb += walker_addr[b].eq(wk_rowterm + wk_col + (b < wk_q1))

        def walker_reset(rowterm, g=fd_g):
            """Start a walk at row term ``rowterm`` for column group ``g`` (the group the
            controller moves to in this cycle, when it moves)."""
            m.d.sync += [wk_k.eq(0), wk_ky.eq(0), wk_kx.eq(0), wk_phase.eq(0), wk_q0.eq(0),
                         wk_q1.eq(0), wk_rowterm.eq(rowterm), wk_off.eq(slot_base + g),
                         wk_col.eq(slot_base + g)]

        def walker_step():
            m.d.sync += wk_k.eq(wk_k + 1)
            with m.If(wk_kx != d.last_kw):
                m.d.sync += wk_kx.eq(wk_kx + 1)
                with m.If(wk_phase == d.last_sw):
                    m.d.sync += wk_phase.eq(0)
                    with m.If(wk_q1 == C - 1):
                        m.d.sync += [wk_q1.eq(0), wk_q0.eq(wk_q0 + 1),
                                     wk_col.eq(wk_off + wk_q0 + 1)]
                    with m.Else():
                        m.d.sync += [wk_q1.eq(wk_q1 + 1), wk_col.eq(wk_off + wk_q0)]
                with m.Else():
                    m.d.sync += [wk_phase.eq(wk_phase + 1), wk_col.eq(wk_col + d.Wq)]
            with m.Else():
                m.d.sync += [wk_kx.eq(0), wk_phase.eq(0), wk_q0.eq(0), wk_q1.eq(0),
                             wk_col.eq(wk_off)]
                with m.If(wk_ky != d.last_kh):
                    m.d.sync += [wk_ky.eq(wk_ky + 1), wk_rowterm.eq(wk_rowterm + d.fd_ky_step)]
                with m.Else():
                    m.d.sync += [wk_ky.eq(0), wk_rowterm.eq(wk_rowterm + d.fd_chan_step)]

        # WR stream walker: pixels (row, col) of the tile for one (nb, ky, kx) block
        ws_row, ws_col = Signal(16), Signal(16)
        # the bank address slot_base + nb·chan_words + kyx offset + row offset + column offset
        # as two registers: ws_blk (the block's, fixed while it streams) and ws_pix (the
        # pixel's), one adder in front of the tile buffers
        ws_rowoff, ws_pix, ws_blk = Signal(bank_aw), Signal(bank_aw), Signal(bank_aw)
        ws_nb, ws_ky, ws_kx = counter(most("nblk")), counter(most("kh")), counter(most("kw"))
        ws_kyxoff = Signal(bank_aw)

        # preload sequencer (IR: inputs from the walker; WR: weight-ROM rows)
        pl_active, pl_row = Signal(), Signal(range(max(2, R)))
        pl_w = Signal(w_aw)
        pl_start = Signal()        # pulse: begin a preload sequence of R rows next cycle
        # registered alongside memory reads (data arrives next cycle)
        beat = Signal(BeatControl)
        beat_q1 = Signal(range(max(2, C)))
        pl_en_d, pl_row_d, pl_zero_d = Signal(), Signal(range(max(2, R))), Signal()
        m.d.sync += [beat.eq(0), pl_en_d.eq(0)]

        psum_busy = Signal(2)
        psum_set, psum_clr = Signal(2), Signal(2)
        m.d.sync += psum_busy.eq((psum_busy | psum_set) & ~psum_clr)
        fd_half = Signal()
        groups_issued, groups_drained = Signal(8), Signal(8)

        with m.If(pl_active):
            with m.If(is_ir):
                for b in range(C):
                    m.d.comb += bank_raddr[b].eq(walker_addr[b])
                m.d.sync += [beat_q1.eq(wk_q1), pl_zero_d.eq(wk_k >= d.K)]
                with m.If(wk_k < d.K):
                    count("ibuf_reads", C)
                walker_step()
            with m.Else():
                m.d.comb += w_port.addr.eq(pl_w)
                m.d.sync += [pl_w.eq(pl_w + 1), pl_zero_d.eq(0)]
                count("weight_reads")
            m.d.sync += [pl_en_d.eq(1), pl_row_d.eq(pl_row), pl_row.eq(pl_row + 1)]
            with m.If(pl_row == R - 1):
                m.d.sync += [pl_active.eq(0), pl_row.eq(0)]
        with m.If(pl_start):
            m.d.sync += [pl_active.eq(1), pl_row.eq(0)]

        def tile_next():
            """Release the tile's half of the input buffer and move to the next tile."""
            m.d.comb += slot_clr.eq(Mux(fd_slot, 0b10, 0b01))
            m.d.sync += fd_slot.eq(~fd_slot)
            with m.If((fd_tr == d.last_ntr) & (fd_tc == d.last_ntc)):
                m.d.sync += feeder_done.eq(1)
                m.next = "IDLE"
            with m.Else():
                m.next = "WAIT_TILE"
                with m.If(fd_tc == d.last_ntc):
                    m.d.sync += [fd_tc.eq(0), fd_tc0.eq(0), fd_tr.eq(fd_tr + 1),
                                 fd_tr0.eq(fd_tr0 + d.Tr), fd_tr_ph.eq(tr_ph_next & pool_mask),
                                 fd_trbase.eq(fd_trbase + d.out_tile_step
                                              + Mux(tr_ph_next > pool_mask, d.PW, 0))]
                with m.Else():
                    m.d.sync += [fd_tc.eq(fd_tc + 1), fd_tc0.eq(fd_tc0 + d.Tc)]

        def group_next():
            """IR and Winograd groups (C pixels / tiles of one row): the next column group, else
            the next output row, else the next tile (the caller has set the next state)."""
            with m.If(fd_g != fd_glast):
                m.d.sync += [fd_g.eq(fd_g + 1), fd_ox0.eq(fd_ox0 + C)]
            with m.Elif(fd_row != fd_rlast):
                m.d.sync += [fd_g.eq(0), fd_ox0.eq(fd_tc0), fd_row.eq(fd_row + 1),
                             fd_row_base.eq(fd_row_base + d.fd_row_step)]
            with m.Else():
                tile_next()

        # Winograd: transform side (the controller) -> compute side handshake over two halves
        # of the transformed-input (V) buffer, and the groups' output coordinates
        v_full, v_set, v_clr = Signal(2), Signal(2), Signal(2)
        m.d.sync += v_full.eq((v_full | v_set) & ~v_clr)
        vh = Signal()                 # V half the transform writes next
        wgroup_layout = data.StructLayout({"ty": 16, "tx0": 16, "tx_end": 16})
        m.submodules.wgroups = wg_fifo = fifo.SyncFIFOBuffered(width=wgroup_layout.size, depth=4)
        wg_w = Signal(wgroup_layout)
        m.d.comb += wg_fifo.w_data.eq(wg_w)
        wn = Signal(16)               # channel whose 4×4 patches the transform reads
        # registered alongside the bank reads: which patch element arrives next cycle
        t_valid, t_first, t_last, t_ij = Signal(), Signal(), Signal(), Signal(4)
        t_n, t_half, t_group_last = Signal(16), Signal(), Signal()
        m.d.sync += t_valid.eq(0)
        x_end_w = Mux(fd_tc0 + d.Tc < d.OW, fd_tc0 + d.Tc, d.OW)

        x_end = Mux(fd_tc0 + d.Tc < d.OW, fd_tc0 + d.Tc, d.OW)
        oy = fd_tr0 + fd_row
        # OR passes' destination address dst + m0·PHW + (oy >> pshift)·PW, kept incrementally
        # (no multiplier): fd_trbase at the tile row, fd_mbase at the block of R channels,
        # fd_obase at the output row; fd_tr_ph and fd_ph are oy mod the pooling window at the
        # tile row and at the output row (a tile need not start on a window boundary)
        pool_mask = d.pool_mask                  # 2^pshift − 1
        fd_trbase, fd_mbase, fd_obase = (Signal(fm_aw + 1, name=n)
                                         for n in ("fd_trbase", "fd_mbase", "fd_obase"))
        fd_tr_ph, fd_ph = Signal(8), Signal(8)
        tr_ph_next = Signal(9)
        m.d.comb += tr_ph_next.eq(fd_tr_ph + d.tr_phase_step)
        with m.FSM(name="controller"):
            with m.State("IDLE"):
                with m.If(run):
                    m.d.sync += [fd_slot.eq(0), fd_tr.eq(0), fd_tc.eq(0), fd_tr0.eq(0),
                                 fd_tc0.eq(0), fd_trbase.eq(d.dst), fd_tr_ph.eq(0),
                                 feeder_done.eq(0), passes_issued.eq(0),
                                 groups_issued.eq(0), fd_half.eq(0), vh.eq(0), ad_i.eq(0)]
                    m.next = "WAIT_TILE"
                    if has_add:
                        with m.If(is_add):
                            m.next = "ADD"
            with m.State("WAIT_TILE"):
                with m.If(slot_full.bit_select(fd_slot, 1)):
                    rows = Mux(fd_tr == d.last_ntr, d.rows_last, d.Tr)
                    cols = Mux(fd_tc == d.last_ntc, d.cols_last, d.Tc)
                    m.d.sync += [fd_mb.eq(0), fd_row.eq(0), fd_g.eq(0), fd_m0.eq(0), fd_s.eq(0),
                                 fd_row_base.eq(0), *set_chan0(0), fd_ox0.eq(fd_tc0),
                                 fd_mbase.eq(fd_trbase), fd_obase.eq(fd_trbase),
                                 fd_ph.eq(fd_tr_ph),
                                 fd_w.eq(d.w_base), fd_w_pass.eq(d.w_base),
                                 fd_w_mb.eq(d.w_base + d.K), fd_valid.eq(1),
                                 fd_rows.eq(rows), fd_cols.eq(cols), fd_rlast.eq(rows - 1),
                                 fd_glast.eq(Mux(fd_tc == d.last_ntc, d.groups_last,
                                                 d.groups_full) - 1)]
                    walker_reset(0, g=0)
                    with m.If(is_or):
                        m.next = "OR_PASS"
                    with m.Elif(is_wino):
                        m.next = "W_GROUP"
                    with m.Else():
                        m.next = "GROUP"

            # ---- OR: passes of L beats, R channels × C pixels each --------------------------
            with m.State("OR_PASS"):
                valid = fd_valid
                for b in range(C):
                    m.d.comb += bank_raddr[b].eq(walker_addr[b])
                m.d.comb += w_port.addr.eq(fd_w)
                m.d.sync += [beat.valid.eq(valid), beat.first.eq(fd_s == 0),
                             beat.last.eq(fd_s == d.last_K), beat_q1.eq(wk_q1)]
                m.d.comb += [meta_fifo.w_en.eq(fd_s == 0),
                             meta_w.m0.eq(fd_m0), meta_w.oy.eq(oy), meta_w.ox0.eq(fd_ox0),
                             meta_w.x_end.eq(x_end), meta_w.out_base.eq(fd_obase)]
                with m.If(valid):
                    m.d.sync += fd_w.eq(fd_w + 1)
                    count("ibuf_reads", C)
                    count("weight_reads")
                    walker_step()
                with m.If(fd_s == d.last_L):
                    m.d.sync += [fd_s.eq(0), passes_issued.eq(passes_issued + 1),
                                 fd_valid.eq(1)]
                    with m.If(fd_g != fd_glast):
                        m.d.sync += [fd_g.eq(fd_g + 1), fd_ox0.eq(fd_ox0 + C),
                                     fd_w.eq(fd_w_pass)]
                        walker_reset(fd_row_base + fd_chan0, g=fd_g + 1)
                    with m.Elif(fd_row != fd_rlast):
                        m.d.sync += [fd_g.eq(0), fd_ox0.eq(fd_tc0), fd_row.eq(fd_row + 1),
                                     fd_row_base.eq(fd_row_base + d.fd_row_step),
                                     fd_w.eq(fd_w_pass)]
                        with m.If(fd_ph == pool_mask):
                            m.d.sync += [fd_obase.eq(fd_obase + d.PW), fd_ph.eq(0)]
                        with m.Else():
                            m.d.sync += fd_ph.eq(fd_ph + 1)
                        walker_reset(fd_row_base + d.fd_row_step + fd_chan0, g=0)
                    with m.Elif(fd_mb != d.last_MB):
                        m.d.sync += [fd_g.eq(0), fd_ox0.eq(fd_tc0), fd_row.eq(0),
                                     fd_row_base.eq(0), fd_mb.eq(fd_mb + 1),
                                     fd_m0.eq(fd_m0 + R), fd_w.eq(fd_w_mb),
                                     fd_w_pass.eq(fd_w_mb), fd_w_mb.eq(fd_w_mb + d.K),
                                     fd_mbase.eq(fd_mbase + d.out_mb_step),
                                     fd_obase.eq(fd_mbase + d.out_mb_step), fd_ph.eq(fd_tr_ph),
                                     *set_chan0(fd_chan0 + d.mb_chan_step)]
                        walker_reset(fd_chan0 + d.mb_chan_step, g=0)
                    with m.Else():
                        tile_next()
                with m.Else():
                    m.d.sync += [fd_s.eq(fd_s + 1), fd_valid.eq(fd_valid & (fd_s != d.last_K))]

            # ---- IR / WR: groups of reduction blocks with a stationary operand -------------
            with m.State("GROUP"):
                # a group: IR one p-group (C pixels, all M channels); WR one channel block
                # (C channels, all pixels of the tile). Wait for its half of the psum buffer.
                with m.If(~psum_busy.bit_select(fd_half, 1) & ~pl_active):
                    m.d.comb += [psum_set.eq(Mux(fd_half, 0b10, 0b01)), meta_fifo.w_en.eq(1),
                                 pl_start.eq(1),
                                 meta_w.m0.eq(fd_m0), meta_w.oy.eq(Mux(is_ir, oy, fd_tr0)),
                                 meta_w.ox0.eq(fd_ox0), meta_w.x_end.eq(x_end),
                                 meta_w.rows.eq(fd_rows), meta_w.cols.eq(fd_cols)]
                    m.d.sync += [fd_kb.eq(0), fd_s.eq(0), groups_issued.eq(groups_issued + 1),
                                 fd_half.eq(~fd_half),
                                 ws_nb.eq(0), ws_ky.eq(0), ws_kx.eq(0), ws_blk.eq(slot_base),
                                 ws_kyxoff.eq(0), ws_row.eq(0), ws_col.eq(0), ws_rowoff.eq(0),
                                 ws_pix.eq(0),
                                 pl_w.eq(fd_w_pass)]
                    with m.If(is_ir):
                        m.d.sync += [fd_beats.eq(d.M), fd_llast.eq(d.last_L)]
                        walker_reset(fd_row_base)
                    with m.Else():
                        m.d.sync += fd_beats.eq(fd_rows * fd_cols)
                    m.next = "PRELOAD"
            with m.State("PRELOAD"):
                # the first block's stationary operands; then stream. WR: the stream's length
                # from the pixel count registered in GROUP (not behind the multiplier)
                m.d.sync += fd_blast.eq(fd_beats - 1)
                with m.If(~is_ir):
                    m.d.sync += fd_llast.eq(Mux(fd_beats > d.Lmin, fd_beats, d.Lmin) - 1)
                with m.If(~pl_active & ~pl_start):
                    m.d.sync += [fd_w.eq(fd_w_pass),       # IR: stream pointer of block 0
                                 fd_valid.eq(1)]
                    m.next = "STREAM"
            with m.State("STREAM"):
                valid = fd_valid                       # fd_s < fd_beats, one beat ahead
                m.d.sync += [beat.valid.eq(valid), beat.swap.eq(fd_s == 0),
                             beat.tail.eq(fd_s == fd_blast),
                             beat.first.eq(fd_kb == 0), beat.last.eq(fd_kb == d.last_KB)]
                with m.If(is_ir):
                    m.d.comb += w_port.addr.eq(fd_w)
                    with m.If(valid):
                        m.d.sync += fd_w.eq(fd_w + d.KB)
                        count("weight_reads")
                with m.Else():
                    for b in range(min(R, NB)):
                        m.d.comb += bank_raddr[b].eq(ws_blk + ws_pix)
                    with m.If(valid):
                        count("ibuf_reads", R)
                        with m.If(ws_col != fd_cols - 1):
                            m.d.sync += [ws_col.eq(ws_col + 1), ws_pix.eq(ws_pix + d.sw)]
                        with m.Else():
                            m.d.sync += [ws_col.eq(0), ws_row.eq(ws_row + 1),
                                         ws_rowoff.eq(ws_rowoff + d.fd_row_step),
                                         ws_pix.eq(ws_rowoff + d.fd_row_step)]
                # preload the next block's stationary operands once this block's first beat
                # has passed every column
                with m.If((fd_s == C - 1) & (fd_kb != d.last_KB)):
                    m.d.comb += pl_start.eq(1)
                with m.If(fd_s == fd_llast):
                    m.d.sync += [fd_s.eq(0), fd_valid.eq(1)]
                    with m.If(fd_kb != d.last_KB):
                        m.d.sync += [fd_kb.eq(fd_kb + 1),
                                     fd_w.eq(fd_w_pass + fd_kb + 1),
                                     ws_row.eq(0), ws_col.eq(0), ws_rowoff.eq(0),
                                     ws_pix.eq(0)]
                        # WR: next (ky, kx, nb) block, nb fastest
                        with m.If(ws_nb != d.last_nblk):
                            m.d.sync += [ws_nb.eq(ws_nb + 1),
                                         ws_blk.eq(ws_blk + d.chan_words)]
                        with m.Else():
                            m.d.sync += ws_nb.eq(0)
                            last_kx = ws_kx == d.last_kw
                            kyx_next = ws_kyxoff + Mux(last_kx, d.fd_ky_step - d.kw + 1, 1)
                            m.d.sync += [ws_kyxoff.eq(kyx_next), ws_blk.eq(slot_base + kyx_next)]
                            with m.If(~last_kx):
                                m.d.sync += ws_kx.eq(ws_kx + 1)
                            with m.Else():
                                m.d.sync += [ws_kx.eq(0), ws_ky.eq(ws_ky + 1)]
                    with m.Elif(is_ir):
                        m.next = "GROUP"
                        group_next()
                    with m.Else():
                        m.next = "GROUP"
                        with m.If(fd_mb != d.last_MB):
                            m.d.sync += [fd_mb.eq(fd_mb + 1), fd_m0.eq(fd_m0 + C),
                                         fd_w_pass.eq(fd_w_pass + d.KB * R)]
                        with m.Else():
                            tile_next()
                with m.Else():
                    m.d.sync += [fd_s.eq(fd_s + 1), fd_valid.eq(fd_valid & (fd_s != fd_blast))]

            # ---- element-wise add: both inputs read in one cycle (ports A and B) -------------
            if has_add:
                with m.State("ADD"):
                    m.d.comb += [fm_rd_a.addr.eq(d.src + ad_i), fm_rd_b.addr.eq(d.src2 + ad_i)]
                    m.d.sync += [ad_v1.eq(1), ad_i.eq(ad_i + 1)]
                    count("fm_reads", 2)
                    with m.If(ad_i == d.last_out_size):
                        m.d.sync += feeder_done.eq(1)
                        m.next = "IDLE"

            # ---- Winograd transform side: 4×4 input patches of C tiles -> V buffer -----------
            with m.State("W_GROUP"):
                # a group: C tiles of one tile row; wait for a free half of the V buffer
                with m.If(~v_full.bit_select(vh, 1) & wg_fifo.w_rdy):
                    m.d.comb += [wg_fifo.w_en.eq(1), wg_w.ty.eq(oy), wg_w.tx0.eq(fd_ox0),
                                 wg_w.tx_end.eq(x_end_w)]
                    m.d.sync += [wn.eq(0), groups_issued.eq(groups_issued + 1)]
                    walker_reset(fd_row_base)
                    m.next = "W_READ"
            with m.State("W_READ"):
                for b in range(C):
                    m.d.comb += bank_raddr[b].eq(walker_addr[b])
                count("ibuf_reads", C)
                patch_last = (wk_ky == 3) & (wk_kx == 3)
                group_last = patch_last & (wn == d.last_N)
                m.d.sync += [t_valid.eq(1), t_first.eq((wk_ky == 0) & (wk_kx == 0)),
                             t_last.eq(patch_last), t_ij.eq(wk_ky[:2] * 4 + wk_kx[:2]),
                             t_n.eq(wn), t_half.eq(vh), t_group_last.eq(group_last),
                             beat_q1.eq(wk_q1)]
                walker_step()
                with m.If(patch_last):
                    m.d.sync += wn.eq(wn + 1)
                with m.If(group_last):
                    m.d.sync += vh.eq(~vh)
                    m.next = "W_GROUP"
                    group_next()

        # ---- array edge: memory data arrives one cycle after the addresses -------------------
        bank_data = Array(port.data for port in banks_rd)
        rotated = []
        for c in range(C):
            sel = Signal(range(2 * C), name=f"x_sel{c}")
            m.d.comb += sel.eq(beat_q1 + c)
            value = Signal(signed(8), name=f"rotated{c}")
            m.d.comb += value.eq(bank_data[Mux(sel >= C, sel - C, sel)])
            rotated.append(value)
        for c in range(C):
            m.d.comb += [array.x_edge[c].eq(rotated[c]),
                         array.preload_data[c].eq(Mux(is_ir, Mux(pl_zero_d, 0, rotated[c]),
                                                      w_port.data[c]))]
        for r in range(R):
            streamed_input = banks_rd[r].data if r < NB else 0     # WR layers have NB >= R
            m.d.comb += array.w_edge[r].eq(Mux(is_wr, streamed_input, w_port.data[r]))
        m.d.comb += [array.ctl_edge.eq(beat), array.preload_en.eq(pl_en_d),
                     array.preload_row.eq(pl_row_d)]

        # ---- OR drainer: one finished accumulator per cycle from the PE results ------------
        dr_active = Signal()
        dr_r, dr_c = Signal(range(max(2, R))), Signal(range(max(2, C)))
        dr_meta = Signal(meta_layout)
        dr_row_base = Signal(fm_aw + 1)
        results = Array(Array(array.results[r][c] for c in range(C)) for r in range(R))
        head = data.View(meta_layout, meta_fifo.r_data)
        with m.If(array.done & is_or):
            m.d.comb += meta_fifo.r_en.eq(1)
            m.d.sync += [dr_active.eq(1), dr_r.eq(0), dr_c.eq(0), dr_meta.eq(head),
                         dr_row_base.eq(head.out_base)]
            count("obuf_writes", R * C)
        with m.Elif(dr_active):
            count("obuf_reads")
            with m.If(dr_c == C - 1):
                m.d.sync += [dr_c.eq(0), dr_r.eq(dr_r + 1), dr_row_base.eq(dr_row_base + d.PHW)]
                with m.If(dr_r == R - 1):
                    m.d.sync += [dr_active.eq(0), passes_drained.eq(passes_drained + 1)]
            with m.Else():
                m.d.sync += dr_c.eq(dr_c + 1)

        # ---- IR / WR: partial-sum buffer (C banks × 2 halves) and its drainer ---------------
        gd_active = Signal()
        ppu_in = Signal(data.StructLayout({"valid": 1, "acc": signed(prog.acc_width),
                                           "ch": 16, "oy": 16, "ox": 16}))
        if stationary:
            depth = prog.psum_depth
            ps_aw = _bits(2 * depth - 1)
            ps_wr, ps_rd_acc, ps_rd_dr = [], [], []
            for c in range(C):
                mem = memory.Memory(shape=signed(prog.acc_width), depth=2 * depth, init=[])
                m.submodules[f"psum{c}"] = mem
                wp = mem.write_port()
                ps_wr.append(wp)
                ps_rd_acc.append(mem.read_port(transparent_for=(wp,)))
                ps_rd_dr.append(mem.read_port())
            # accumulate: column sums (aligned) + what the buffer holds
            pc = Signal(BeatControl)
            m.d.comb += [pc.eq(array.psum_ctl), pc.valid.eq(array.psum_ctl.valid & (is_ir | is_wr))]
            acc_j, acc_half = Signal(16), Signal()
            a_valid, a_first, a_addr, a_done = Signal(), Signal(), Signal(ps_aw), Signal()
            a_psums = [Signal(signed(prog.acc_width), name=f"a_psum{c}") for c in range(C)]
            j = Mux(pc.swap, 0, acc_j)
            addr_now = Mux(acc_half, depth, 0) + j
            for c in range(C):
                m.d.comb += ps_rd_acc[c].addr.eq(addr_now)
            m.d.sync += [a_valid.eq(pc.valid), a_first.eq(pc.first), a_addr.eq(addr_now),
                         a_done.eq(0)]
            m.d.sync += [a_psums[c].eq(array.psums[c]) for c in range(C)]
            with m.If(pc.valid):
                m.d.sync += acc_j.eq(j + 1)
                with m.If(~pc.first):
                    count("obuf_reads", C)
                count("obuf_writes", C)
            group_ready = Signal(2)
            ready_set = Signal(2)
            # the group is complete after the last beat of its last block
            last_of_group = Signal()
            m.d.comb += last_of_group.eq(pc.valid & pc.last & pc.tail)
            with m.If(last_of_group):
                m.d.sync += [a_done.eq(1), acc_half.eq(~acc_half)]
            for c in range(C):
                m.d.comb += [ps_wr[c].addr.eq(a_addr),
                             ps_wr[c].data.eq(Mux(a_first, a_psums[c],
                                                  a_psums[c] + ps_rd_acc[c].data)),
                             ps_wr[c].en.eq(a_valid)]
            a_done_half = Signal()
            with m.If(last_of_group):
                m.d.sync += a_done_half.eq(acc_half)
            with m.If(a_done):
                m.d.comb += ready_set.eq(Mux(a_done_half, 0b10, 0b01))

            # drain one group: IR (m outer, c inner), WR (c outer, pixel inner)
            gd_half, gd_o, gd_i = Signal(), Signal(16), Signal(16)
            gd_row, gd_col = Signal(16), Signal(16)
            gd_meta = Signal(meta_layout)
            gd_valid_d = Signal()
            gd_bank_d = Signal(range(max(2, C)))
            gd_info_d = Signal(data.StructLayout({"ch": 16, "oy": 16, "ox": 16}))
            m.d.sync += group_ready.eq((group_ready | ready_set) & ~Mux(
                gd_active & gd_last(m, is_ir, gd_o, gd_i, gd_row, gd_col, gd_meta, d, C),
                Mux(gd_half, 0b10, 0b01), 0))
            m.d.sync += gd_valid_d.eq(0)
            with m.If(~gd_active & group_ready.bit_select(gd_half, 1) & meta_fifo.r_rdy
                      & ~is_or):
                m.d.comb += meta_fifo.r_en.eq(1)
                m.d.sync += [gd_active.eq(1), gd_meta.eq(head), gd_o.eq(0), gd_i.eq(0),
                             gd_row.eq(0), gd_col.eq(0)]
            with m.If(gd_active):
                bank = Mux(is_ir, gd_i, gd_o)
                word = Mux(is_ir, gd_o, gd_i)
                for c in range(C):
                    m.d.comb += ps_rd_dr[c].addr.eq(Mux(gd_half, depth, 0) + word)
                count("obuf_reads")
                m.d.sync += [gd_valid_d.eq(1), gd_bank_d.eq(bank),
                             gd_info_d.ch.eq(Mux(is_ir, gd_o, gd_meta.m0 + gd_o)),
                             gd_info_d.oy.eq(Mux(is_ir, gd_meta.oy, gd_meta.oy + gd_row)),
                             gd_info_d.ox.eq(Mux(is_ir, gd_meta.ox0 + gd_i,
                                                 gd_meta.ox0 + gd_col))]
                last = gd_last(m, is_ir, gd_o, gd_i, gd_row, gd_col, gd_meta, d, C)
                with m.If(last):
                    m.d.comb += psum_clr.eq(Mux(gd_half, 0b10, 0b01))
                    m.d.sync += [gd_active.eq(0), gd_half.eq(~gd_half),
                                 groups_drained.eq(groups_drained + 1)]
                inner_end = Mux(is_ir, gd_i == C - 1,
                                (gd_row == gd_meta.rows - 1) & (gd_col == gd_meta.cols - 1))
                with m.If(inner_end):
                    m.d.sync += [gd_o.eq(gd_o + 1), gd_i.eq(0), gd_row.eq(0), gd_col.eq(0)]
                with m.Else():
                    m.d.sync += gd_i.eq(gd_i + 1)
                    with m.If(gd_col == gd_meta.cols - 1):
                        m.d.sync += [gd_col.eq(0), gd_row.eq(gd_row + 1)]
                    with m.Else():
                        m.d.sync += gd_col.eq(gd_col + 1)
            with m.If(run):
                m.d.sync += [groups_drained.eq(0), gd_half.eq(0), acc_half.eq(0),
                             group_ready.eq(0)]
            ps_data = Array(port.data for port in ps_rd_dr)
            info = gd_info_d
            gd_x_end = Mux(is_ir, gd_meta.x_end, d.OW)
            m.d.comb += [
                ppu_in.valid.eq(gd_valid_d & (info.ch < d.M) & (info.ox < gd_x_end)),
                ppu_in.acc.eq(ps_data[gd_bank_d]), ppu_in.ch.eq(info.ch),
                ppu_in.oy.eq(info.oy), ppu_in.ox.eq(info.ox)]

        # ---- Winograd F(2×2, 3×3): input transform, V buffer, compute, output transform -----
        wo_in = Signal(data.StructLayout({"valid": 1, "acc": signed(ppu_width),
                                          "ch": 16, "oy": 16, "ox": 16}))
        wino_busy = Signal()
        if wino:
            from cnnforge.sim.winograd import AT, BT
            vdepth = prog.winograd_depth
            v_aw = _bits(2 * vdepth - 1)
            vb_wr, vb_rd = [], []
            for c in range(C):
                mem = memory.Memory(shape=signed(prog.x_width), depth=2 * vdepth, init=[])
                m.submodules[f"vbuf{c}"] = mem
                vb_wr.append(mem.write_port())
                vb_rd.append(mem.read_port())
            with m.If(is_wino):
                m.d.comb += [array.x_edge[c].eq(vb_rd[c].data) for c in range(C)]
            # input transform units: V = Bᵀ d B accumulated over the 16 reads of a patch
            vacc = [[Signal(signed(prog.x_width), name=f"vacc{c}_{x}") for x in range(16)]
                    for c in range(C)]
            vout = [[Signal(signed(prog.x_width), name=f"vout{c}_{x}") for x in range(16)]
                    for c in range(C)]
            vw_active, vw_count, vw_n = Signal(), Signal(4), Signal(16)
            vw_half, vw_group_last = Signal(), Signal()
            with m.If(vw_active):
                for c in range(C):
                    m.d.comb += [vb_wr[c].addr.eq(Mux(vw_half, vdepth, 0) + vw_n * 16 + vw_count),
                                 vb_wr[c].data.eq(Array(vout[c])[vw_count]),
                                 vb_wr[c].en.eq(1)]
                count("ibuf_writes", C)
                m.d.sync += vw_count.eq(vw_count + 1)
                with m.If(vw_count == 15):
                    m.d.sync += vw_active.eq(0)
                    with m.If(vw_group_last):
                        m.d.comb += v_set.eq(Mux(vw_half, 0b10, 0b01))
            with m.If(t_valid):
                with m.Switch(t_ij):
                    for i in range(4):
                        for jj in range(4):
                            with m.Case(i * 4 + jj):
                                for c in range(C):
                                    dval = rotated[c]
                                    for a in range(4):
                                        for b in range(4):
                                            coef = int(BT[a][i] * BT[b][jj])
                                            x = a * 4 + b
                                            base = Mux(t_first, 0, vacc[c][x])
                                            new = (base + dval if coef > 0 else
                                                   base - dval if coef < 0 else base)
                                            m.d.sync += vacc[c][x].eq(new)
                                            with m.If(t_last):
                                                m.d.sync += vout[c][x].eq(new)
                with m.If(t_last):
                    m.d.sync += [vw_active.eq(1), vw_count.eq(0), vw_n.eq(t_n),
                                 vw_half.eq(t_half), vw_group_last.eq(t_group_last)]

            # compute side: for each group, for each block of R channels, 16 passes (one per
            # transform position ξ) of N beats over the V buffer and the U weights
            o_busy, o_set, o_clr = Signal(2), Signal(2), Signal(2)
            o_ready, o_ready_set, o_ready_clr = Signal(2), Signal(2), Signal(2)
            m.d.sync += [o_busy.eq((o_busy | o_set) & ~o_clr),
                         o_ready.eq((o_ready | o_ready_set) & ~o_ready_clr)]
            pass_layout = data.StructLayout({"xi": 4, "half": 1})
            m.submodules.wpasses = wp_fifo = fifo.SyncFIFOBuffered(width=pass_layout.size,
                                                                   depth=4)
            set_layout = data.StructLayout({"m0": 16, "ty": 16, "tx0": 16, "tx_end": 16,
                                            "half": 1})
            m.submodules.wsets = ws_fifo = fifo.SyncFIFOBuffered(width=set_layout.size, depth=4)
            cf_group = Signal(wgroup_layout)
            cf_vh, cf_oh = Signal(), Signal()
            cf_mb, cf_m0, cf_xi, cf_s = Signal(16), Signal(16), Signal(4), Signal(16)
            cf_w = Signal(w_aw)
            cf_busy = Signal()
            pw_w, sw_w = Signal(pass_layout), Signal(set_layout)
            m.d.comb += [wp_fifo.w_data.eq(pw_w), ws_fifo.w_data.eq(sw_w)]
            wsets_issued, wsets_done = Signal(8), Signal(8)      # modulo 2^8, as passes_issued
            with m.FSM(name="wino_compute"):
                with m.State("IDLE"):
                    with m.If(run):
                        m.d.sync += [cf_vh.eq(0), cf_oh.eq(0), wsets_issued.eq(0),
                                     groups_drained.eq(0)]
                    with m.Elif(is_wino & wg_fifo.r_rdy & v_full.bit_select(cf_vh, 1)):
                        m.d.comb += wg_fifo.r_en.eq(1)
                        m.d.sync += [cf_group.eq(wg_fifo.r_data), cf_mb.eq(0), cf_m0.eq(0),
                                     cf_w.eq(d.w_base)]
                        m.next = "BLOCK"
                with m.State("BLOCK"):
                    m.d.comb += cf_busy.eq(1)
                    with m.If(~o_busy.bit_select(cf_oh, 1) & ws_fifo.w_rdy):
                        m.d.comb += [o_set.eq(Mux(cf_oh, 0b10, 0b01)), ws_fifo.w_en.eq(1),
                                     sw_w.m0.eq(cf_m0), sw_w.ty.eq(cf_group.ty),
                                     sw_w.tx0.eq(cf_group.tx0), sw_w.tx_end.eq(cf_group.tx_end),
                                     sw_w.half.eq(cf_oh)]
                        m.d.sync += [cf_xi.eq(0), cf_s.eq(0),
                                     wsets_issued.eq(wsets_issued + 1)]
                        m.next = "PASS"
                with m.State("PASS"):
                    m.d.comb += cf_busy.eq(1)
                    valid = cf_s < d.K
                    for c in range(C):
                        m.d.comb += vb_rd[c].addr.eq(Mux(cf_vh, vdepth, 0) + cf_s * 16 + cf_xi)
                    m.d.comb += w_port.addr.eq(cf_w)
                    m.d.sync += [beat.valid.eq(valid), beat.first.eq(cf_s == 0),
                                 beat.last.eq(cf_s == d.last_K)]
                    m.d.comb += [wp_fifo.w_en.eq(cf_s == 0), pw_w.xi.eq(cf_xi),
                                 pw_w.half.eq(cf_oh)]
                    with m.If(valid):
                        m.d.sync += cf_w.eq(cf_w + 1)
                        count("ibuf_reads", C)
                        count("weight_reads")
                    with m.If(cf_s == d.last_L):
                        m.d.sync += [cf_s.eq(0), passes_issued.eq(passes_issued + 1)]
                        with m.If(cf_xi != 15):
                            m.d.sync += cf_xi.eq(cf_xi + 1)
                        with m.Else():
                            m.d.sync += cf_oh.eq(~cf_oh)
                            with m.If(cf_mb != d.last_MB):
                                m.d.sync += [cf_mb.eq(cf_mb + 1), cf_m0.eq(cf_m0 + R)]
                                m.next = "BLOCK"
                            with m.Else():
                                m.d.comb += v_clr.eq(Mux(cf_vh, 0b10, 0b01))
                                m.d.sync += [cf_vh.eq(~cf_vh),
                                             groups_drained.eq(groups_drained + 1)]
                                m.next = "IDLE"
                    with m.Else():
                        m.d.sync += cf_s.eq(cf_s + 1)

            # output transform, accumulated as the 16 passes finish: per column c, word
            # (half, r) holds 4Y[i][j] of output channel m0 + r of tile c (4 lanes)
            y4 = prog.y4_width
            ot_layout = data.ArrayLayout(signed(y4), 4)
            ot_wr, ot_rd, ot_sr = [], [], []
            for c in range(C):
                mem = memory.Memory(shape=ot_layout, depth=2 * R, init=[])
                m.submodules[f"otbuf{c}"] = mem
                wp = mem.write_port()
                ot_wr.append(wp)
                ot_rd.append(mem.read_port(transparent_for=(wp,)))
                ot_sr.append(mem.read_port())
            ot_active, ot_r = Signal(), Signal(range(max(2, R)))
            ot_meta = Signal(pass_layout)
            o_valid, o_first, o_addr, o_xi, o_done = (Signal(), Signal(), Signal(_bits(2 * R)),
                                                      Signal(4), Signal())
            o_res = [Signal(signed(prog.acc_width), name=f"o_res{c}") for c in range(C)]
            o_done_half = Signal()
            results_w = Array(Array(array.results[r][c] for c in range(C)) for r in range(R))
            m.d.sync += [o_valid.eq(0), o_done.eq(0)]
            with m.If(array.done & is_wino):
                m.d.comb += wp_fifo.r_en.eq(1)
                m.d.sync += [ot_active.eq(1), ot_r.eq(0),
                             ot_meta.eq(data.View(pass_layout, wp_fifo.r_data))]
            with m.Elif(ot_active):
                addr = Mux(ot_meta.half, R, 0) + ot_r
                for c in range(C):
                    m.d.comb += ot_rd[c].addr.eq(addr)
                m.d.sync += [o_valid.eq(1), o_first.eq(ot_meta.xi == 0), o_addr.eq(addr),
                             o_xi.eq(ot_meta.xi)]
                m.d.sync += [o_res[c].eq(results_w[ot_r][c]) for c in range(C)]
                count("obuf_writes", C)
                with m.If(ot_meta.xi != 0):
                    count("obuf_reads", C)
                with m.If(ot_r == R - 1):
                    m.d.sync += [ot_active.eq(0), passes_drained.eq(passes_drained + 1),
                                 o_done.eq(ot_meta.xi == 15), o_done_half.eq(ot_meta.half)]
                with m.Else():
                    m.d.sync += ot_r.eq(ot_r + 1)
            coefs = [Array(Const(int(AT[i][x // 4] * AT[jj][x % 4]), signed(2)) for x in range(16))
                     for i in range(2) for jj in range(2)]
            for c in range(C):
                m.d.comb += [ot_wr[c].addr.eq(o_addr), ot_wr[c].en.eq(o_valid)]
                for lane in range(4):
                    coef = coefs[lane][o_xi]
                    term = Mux(coef == 0, 0, Mux(coef > 0, o_res[c], -o_res[c]))
                    m.d.comb += ot_wr[c].data[lane].eq(Mux(o_first, 0, ot_rd[c].data[lane]) + term)
            with m.If(o_done):
                m.d.comb += o_ready_set.eq(Mux(o_done_half, 0b10, 0b01))

            # serializer: 4·R·C outputs of a finished set, one per cycle, to the post-processor
            sr_active, sr_half = Signal(), Signal()
            sr_r, sr_c, sr_q = Signal(range(max(2, R))), Signal(range(max(2, C))), Signal(2)
            sr_meta = Signal(set_layout)
            sr_valid_d, sr_c_d, sr_q_d = Signal(), Signal(range(max(2, C))), Signal(2)
            sr_info = Signal(data.StructLayout({"ch": 16, "oy": 16, "ox": 16, "ok": 1}))
            m.d.sync += sr_valid_d.eq(0)
            with m.If(~sr_active & o_ready.bit_select(sr_half, 1) & ws_fifo.r_rdy):
                m.d.comb += ws_fifo.r_en.eq(1)
                m.d.sync += [sr_active.eq(1), sr_meta.eq(data.View(set_layout, ws_fifo.r_data)),
                             sr_r.eq(0), sr_c.eq(0), sr_q.eq(0)]
            with m.If(sr_active):
                for c in range(C):
                    m.d.comb += ot_sr[c].addr.eq(Mux(sr_half, R, 0) + sr_r)
                with m.If(sr_q == 0):
                    count("obuf_reads")
                tx = sr_meta.tx0 + sr_c
                m.d.sync += [sr_valid_d.eq(1), sr_c_d.eq(sr_c), sr_q_d.eq(sr_q),
                             sr_info.ch.eq(sr_meta.m0 + sr_r),
                             sr_info.oy.eq(sr_meta.ty * 2 + sr_q[1]),
                             sr_info.ox.eq(tx * 2 + sr_q[0]),
                             sr_info.ok.eq(tx < sr_meta.tx_end)]
                m.d.sync += sr_q.eq(sr_q + 1)
                with m.If(sr_q == 3):
                    with m.If(sr_c == C - 1):
                        m.d.sync += [sr_c.eq(0), sr_r.eq(sr_r + 1)]
                        with m.If(sr_r == R - 1):
                            m.d.comb += [o_clr.eq(Mux(sr_half, 0b10, 0b01)),
                                         o_ready_clr.eq(Mux(sr_half, 0b10, 0b01))]
                            m.d.sync += [sr_active.eq(0), sr_half.eq(~sr_half),
                                         wsets_done.eq(wsets_done + 1)]
                    with m.Else():
                        m.d.sync += sr_c.eq(sr_c + 1)
            with m.If(run):
                m.d.sync += [sr_half.eq(0), wsets_done.eq(0)]
            word = Array(port.data for port in ot_sr)[sr_c_d]
            m.d.comb += [
                wo_in.valid.eq(sr_valid_d & sr_info.ok & (sr_info.ch < d.M)),
                wo_in.acc.eq(word[sr_q_d] >> 2),        # exact: 4Y is a multiple of 4
                wo_in.ch.eq(sr_info.ch), wo_in.oy.eq(sr_info.oy), wo_in.ox.eq(sr_info.ox),
                wino_busy.eq(cf_busy | wg_fifo.r_rdy | ot_active | sr_active | o_done
                             | (o_ready != 0) | (wsets_issued != wsets_done) | vw_active
                             | t_valid),
            ]

        # ---- element-wise add: rescaling tables (TFLite int8 add), two lookups per cycle ------
        ad_i1, ad_i2 = Signal.like(ad_i), Signal.like(ad_i)
        ad_sum = Signal(signed(ppu_width))
        m.d.sync += [ad_i1.eq(ad_i), ad_i2.eq(ad_i1)]
        if has_add:
            tables = prog.add_tables
            t_width = max(2, int(abs(tables).max()).bit_length() + 1)
            m.submodules.add_tables = trom = memory.Memory(
                shape=signed(t_width), depth=len(tables), init=[int(t) for t in tables])
            t_rd_a, t_rd_b = trom.read_port(), trom.read_port()
            # entry x + 128 of each table: the int8 value with its sign bit flipped
            m.d.comb += [t_rd_a.addr.eq(d.t_base + (fm_rd_a.data.as_unsigned() ^ 0x80)),
                         t_rd_b.addr.eq(d.t_base + 256 + (fm_rd_b.data.as_unsigned() ^ 0x80)),
                         ad_sum.eq(t_rd_a.data + t_rd_b.data)]
            with m.If(ad_v1):
                count("weight_reads", 2)

        # ---- post-processor input: from the OR drainer or the group drainer ------------------
        ch = Signal(16)
        ox = Signal(16)
        oy_ = Signal(16)
        acc = Signal(signed(ppu_width))
        in_valid = Signal()
        with m.If(is_or):
            m.d.comb += [ch.eq(dr_meta.m0 + dr_r), ox.eq(dr_meta.ox0 + dr_c),
                         oy_.eq(dr_meta.oy), acc.eq(results[dr_r][dr_c]),
                         in_valid.eq(dr_active & (ch < d.M) & (ox < dr_meta.x_end))]
        with m.Elif(is_wino):
            m.d.comb += [ch.eq(wo_in.ch), ox.eq(wo_in.ox), oy_.eq(wo_in.oy),
                         acc.eq(wo_in.acc), in_valid.eq(wo_in.valid)]
        if has_add:
            with m.Elif(is_add):
                m.d.comb += [acc.eq(ad_sum), in_valid.eq(ad_v2)]
        with m.Else():
            m.d.comb += [ch.eq(ppu_in.ch), ox.eq(ppu_in.ox), oy_.eq(ppu_in.oy),
                         acc.eq(ppu_in.acc), in_valid.eq(ppu_in.valid)]
        first = ((oy_ & pool_mask) == 0) & ((ox & pool_mask) == 0)
        # the destination's row address: OR drains know it (dr_row_base); the others compute
        # it (the post-processor registers its input, so this stays in one cycle of its own)
        if stationary or wino:
            row_addr = Mux(is_or, dr_row_base,
                           Mux(is_add, d.dst + ad_i2, d.dst + ch * d.PHW + (oy_ >> d.pshift) * d.PW))
        else:
            row_addr = Mux(is_or, dr_row_base, d.dst + ad_i2)
        m.d.comb += [
            ppu.valid.eq(in_valid & (oy_ < d.oy_lim) & (ox < d.ox_lim)),
            ppu.acc.eq(acc),
            ppu.channel.eq(d.ch_base + ch),
            ppu.addr.eq(row_addr + (ox >> d.pshift)),
            ppu.first.eq(first),
        ]
        with m.If(ppu.wr_en):
            count("fm_writes")
        # the pooling read is used when a write is not its window's first
        with m.If(ppu.rd_en):
            count("fm_reads")
        with m.If(run):
            m.d.sync += passes_drained.eq(0)

        # ---- sequencer -------------------------------------------------------------------
        img_count = Signal(range(max(2, prog.image_size + 1)))
        out_idx = Signal(range(prog.fm_depth + 1))
        out_total = Signal(range(prog.fm_depth + 1))
        out_base = Signal(fm_aw + 1)
        out_valid = Signal()
        out_data = Signal(8)
        out_wait = Signal()          # read issued, data arrives next cycle
        hdr = Signal(range(4 * len(COUNTERS)))
        to_logits = Signal()
        m.d.comb += [self.o_logits.payload.eq(out_data), self.o_debug.payload.eq(out_data),
                     self.o_logits.valid.eq(out_valid & to_logits),
                     self.o_debug.valid.eq(out_valid & ~to_logits)]
        out_ready = Mux(to_logits, self.o_logits.ready, self.o_debug.ready)
        m.d.comb += self.cycles.eq(total_cycles)
        header = Signal(32 * len(COUNTERS))
        m.d.comb += header.eq(Cat(*(counters[n] for n in COUNTERS)))

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

        # the increments of a cycle are summed into a register and added one cycle later (the
        # counters are read only once the layer has ended, and the last increment lands in the
        # cycle the sequencer leaves RUN)
        for name in COUNTERS[1:]:
            if increments[name]:
                total = sum(increments[name])
                inc_q = Signal(total.shape(), name=f"inc_{name}_q")
                m.d.sync += [inc_q.eq(Mux(run, 0, total)),
                             counters[name].eq(counters[name] + inc_q)]
        layer_busy = (~loader_done | ~feeder_done | (passes_issued != passes_drained)
                      | (groups_issued != groups_drained) | dr_active | gd_active
                      | ppu.busy | array.done | wino_busy | ad_v1 | ad_v2)
        # registered: the sequencer leaves RUN one cycle after the layer is idle (the wide OR
        # of the units' states is not in front of the sequencer's state); cleared in KICK, as
        # the units only start in RUN's first cycle
        layer_idle = Signal()
        m.d.sync += layer_idle.eq(~layer_busy)
        with m.FSM(name="sequencer"):
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
                m.d.comb += [desc_port.addr.eq(layer), desc_port.en.eq(1)]
                m.d.sync += total_cycles.eq(total_cycles + 1)
                m.next = "START"
            with m.State("START"):
                m.d.sync += total_cycles.eq(total_cycles + 1)
                m.d.sync += [c.eq(0) for c in counters.values()]
                m.next = "KICK"
            with m.State("KICK"):
                m.d.comb += run.eq(1)
                m.d.sync += [counters["cycles"].eq(1), total_cycles.eq(total_cycles + 1),
                             layer_idle.eq(0)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [fm_wr.addr.eq(ppu.wr_addr), fm_wr.data.eq(ppu.wr_data),
                             fm_wr.en.eq(ppu.wr_en)]
                m.d.sync += [counters["cycles"].eq(counters["cycles"] + 1),
                             total_cycles.eq(total_cycles + 1)]
                with m.If(layer_idle):
                    m.d.sync += [out_base.eq(d.dst), out_total.eq(d.out_size), out_idx.eq(0),
                                 hdr.eq(0), to_logits.eq(0)]
                    with m.If(self.debug):
                        m.next = "DUMP_HEADER"
                    with m.Else():
                        m.next = "NEXT"
            with m.State("DUMP_HEADER"):
                with m.If(out_valid):
                    with m.If(out_ready):
                        m.d.sync += [out_valid.eq(0), hdr.eq(hdr + 1)]
                        with m.If(hdr == 4 * len(COUNTERS) - 1):
                            m.next = "DUMP"
                with m.Else():
                    m.d.sync += [out_valid.eq(1), out_data.eq(header.word_select(hdr, 8))]
            with m.State("DUMP"):
                stream_out(m, "NEXT")
            with m.State("NEXT"):
                m.d.sync += total_cycles.eq(total_cycles + 1)
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


def gd_last(m, is_ir, o, i, row, col, meta, d, C):
    """Last element of a group drain."""
    last_ir = (o == d.M - 1) & (i == C - 1)
    last_wr = (o == C - 1) & (row == meta.rows - 1) & (col == meta.cols - 1)
    return Mux(is_ir, last_ir, last_wr)


def elaborate(qnet, config=None, **kwargs):
    """Compile ``qnet`` for ``config`` and return ``(Accelerator, Program)``.

    Raises ``NetworkError`` / ``ConfigError`` (see :func:`compile_network`)."""
    from cnnforge.hw.compiler.program import compile_network
    program = compile_network(qnet, config, **kwargs)
    return Accelerator(program), program
