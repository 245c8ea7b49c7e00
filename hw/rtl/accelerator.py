"""The accelerator: a layer engine elaborated from a compiled
:class:`~cnnforge.hw.compiler.program.Program`, built of the components of :mod:`cnnforge.hw.rtl`.

Block diagram (one engine, layers run one after another from the layer-descriptor ROM; the names
are the components')::

    i_image ─► Sequencer ─► feature-map memory (two regions, C,H,W-major) ◄── PostProcessor
    o_logits ◄─┘  (descriptors,     │ read port A                   (bias, requantize, clamp,
    o_debug  ◄─┘   PerfCounters)    ▼                                fused max-pool, write-back)
              TileLoader ──► TileBuffer: banks × 2 halves (ping-pong)                  ▲
                                   │ one word per bank per cycle                       │
                                   ▼                                                    │
              Controller: OR / IR / WR / Winograd reads (tile loop nest, Im2colWalker) │
                   │ streamed operands, preloads          weight ROM                   │
                   ▼                                                                    │
              SystolicArray R×C ── OS: results ──────────────► OutputDrainer ──────────┤
                    │          └─ IS/WS: column sums ─► PartialSumBuffer (+ drain) ────┤
                    └─ Winograd: WinogradInputTransform ─► WinogradCompute ────────────┤
              AddUnit (element-wise add, feature-map ports A and B) ───────────────────┘

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

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.compiler.program import Program, compile_network
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.timing import fm_read_latency, read_port_latency
from cnnforge.hw.rtl.add import AddUnit
from cnnforge.hw.rtl.banked import BankedMemory
from cnnforge.hw.rtl.common import (COUNTERS, NO_RW_CHECK, BlockRAMFIFO, PingPong, bits,
                                    connect_desc, delay, descriptor_layout, most_of)
from cnnforge.hw.rtl.controller import Controller
from cnnforge.hw.rtl.drain import OutputDrainer, PartialSumBuffer, meta_layout
from cnnforge.hw.rtl.loader import TileLoader
from cnnforge.hw.rtl.pe_array import SystolicArray, delay_beat
from cnnforge.hw.rtl.ppu import PostProcessor
from cnnforge.hw.rtl.sequencer import PerfCounters, Sequencer
from cnnforge.hw.rtl.spram import SPRAM, FeatureMapSlots, WeightLoader
from cnnforge.hw.rtl.tile_buffer import TileBuffer
from cnnforge.hw.rtl.winograd import WinogradCompute, WinogradInputTransform

__all__ = ["Accelerator", "COUNTERS", "elaborate"]


class Accelerator(wiring.Component):
    """The top level: image in, logits out, optional per-layer debug dump.

    Parameters
    ----------
    program : Program
        From :func:`cnnforge.hw.compiler.program.compile_network`; every width, depth and ROM
        content comes from it.

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
    i_weights : In(stream.Signature(8))
        Only with ``config.spram_weights``: the weight image
        (:func:`~cnnforge.hw.compiler.program.weight_image`), taken while no image is in
        flight; it must be sent before the first image (SPRAM starts undefined).
    weights_restart : In(1)
        Only with ``config.spram_weights``: the next ``i_weights`` byte is the image's first.
    weights_loaded : Out(1)
        Only with ``config.spram_weights``: the whole weight image has been written (low again
        from the first byte of the next one).

    ``primitives``: the FPGA family (``"ice40"``, ``"ecp5"``) whose blocks are instantiated
    where a behavioral model would otherwise stand (synthesis; ``False``: the models, for
    simulation): ``SB_SPRAM256KA`` for SPRAM on iCE40, on ECP5 the PEs' and the requantizer's
    multiplies in ``MULT18X18D`` output registers (same values, same cycles).
    ``perf_counters``: build the per-layer :data:`COUNTERS` of the debug records (off: the
    records carry zeros; a board core, which never asks for them, saves their 256 flip-flops
    and adders).
    """

    def __init__(self, program: Program, *, primitives=False, perf_counters=True):
        self.program = program
        self.primitives = primitives
        self.perf_counters = perf_counters
        members = {
            "i_image": In(stream.Signature(signed(8))),
            "o_logits": Out(stream.Signature(signed(8))),
            "o_debug": Out(stream.Signature(8)),
            "debug": In(1),
            "cycles": Out(32),
        }
        if program.config.spram_weights:
            members.update({"i_weights": In(stream.Signature(8)), "weights_restart": In(1),
                            "weights_loaded": Out(1)})
        super().__init__(members)

    def descriptor_layout(self):
        """The layer descriptor (:func:`~cnnforge.hw.rtl.common.descriptor_layout`): every field
        as wide as the network's values need."""
        return descriptor_layout(self.program)

    def elaborate(self, platform):
        m = Module()
        prog, cfg = self.program, self.program.config
        R, C, NB = cfg.rows, cfg.cols, prog.input_banks
        modes = {Dataflow(layer.values["df"]) for layer in prog.layers}
        has_add, wino = Dataflow.ADD in modes, Dataflow.WINOGRAD in modes
        desc = self.descriptor_layout()
        fm_aw, bank_aw = prog.fm_addr_width, bits(2 * prog.slot_words - 1) + 1
        w_aw, meta = bits(len(prog.weights)) + 1, meta_layout(prog)
        ppu_width = max(prog.acc_width, prog.y4_width - 2)

        def most(*names):
            return most_of(prog, *names)

        # ---- memories, the array and the post-processor ------------------------------------
        m.submodules.sequencer = seq = Sequencer(prog, desc, fm_aw)
        wiring.connect(m, wiring.flipped(self.i_image), seq.i_image)
        wiring.connect(m, seq.o_logits, wiring.flipped(self.o_logits))
        wiring.connect(m, seq.o_debug, wiring.flipped(self.o_debug))
        m.d.comb += [seq.debug.eq(self.debug), self.cycles.eq(seq.cycles)]
        d = seq.desc
        fm_wr, fm_rd_a, fm_rd_b = self._feature_map(m, fm_aw)
        m.d.comb += [fm_wr.addr.eq(seq.fm_wr_addr), fm_wr.data.eq(seq.fm_wr_data),
                     fm_wr.en.eq(seq.fm_wr_en)]
        w_port = self._weights(m, seq)
        m.submodules.ibuf = ibuf = TileBuffer(NB, 2 * prog.slot_words, bank_aw,
                                              cfg.lutram_buffers, lanes=cfg.loader_lanes,
                                              banked_weights=cfg.banked_weights)
        family = self.primitives or None
        m.submodules.array = array = SystolicArray(R, C, prog.acc_width, prog.w_width,
                                                   prog.x_width, family=family,
                                                   row_inputs=prog.depthwise_rows,
                                                   stationary=prog.stationary,
                                                   product_registers=cfg.product_registers)
        m.submodules.ppu = ppu = PostProcessor(ppu_width, prog.params, fm_aw, prog.rounding,
                                               family=family, interval=cfg.ppu_interval,
                                               pooling=prog.pooling,
                                               param_bank_words=cfg.weight_bank_words)
        m.d.comb += [ppu.zero_point.eq(d.z_out), ppu.act_min.eq(d.act_min),
                     ppu.act_max.eq(d.act_max), ppu.rd_data.eq(fm_rd_b.data),
                     seq.ppu_wr_addr.eq(ppu.wr_addr), seq.ppu_wr_data.eq(ppu.wr_data),
                     seq.ppu_wr_en.eq(ppu.wr_en)]

        # ---- units -------------------------------------------------------------------------
        m.submodules.loader = loader = TileLoader(
            NB, R, C, prog.slot_words, bank_aw, fm_aw, desc, most, lanes=cfg.loader_lanes,
            fm_latency=fm_read_latency(cfg.lutram_buffers, cfg.banked_fm),
            fm_port_latency=read_port_latency(cfg.banked_fm))
        m.submodules.controller = ctl = Controller(prog, bank_aw, w_aw, meta, desc)
        m.submodules.or_drain = drain = OutputDrainer(
            R, C, prog.acc_width, meta, desc, fm_aw, interval=cfg.ppu_interval,
            narrow=cfg.narrow_passes)
        m.submodules.slots = slots = PingPong()
        m.submodules.meta = meta_fifo = BlockRAMFIFO(width=meta.size, depth=cfg.pass_fifo_depth,
                                                      family=family)
        units = [loader, ctl, drain]
        m.d.comb += [slots.set.eq(loader.slot_set), slots.clr.eq(ctl.slot_clr),
                     loader.slot_full.eq(slots.full), ctl.slot_full.eq(slots.full),
                     loader.fm_data.eq(fm_rd_a.data), seq.fm_rd_data.eq(fm_rd_a.data),
                     ibuf.wr_en.eq(loader.wr_en), ibuf.wr_bank.eq(loader.wr_bank),
                     ibuf.wr_addr.eq(loader.wr_addr), ibuf.wr_data.eq(loader.wr_data),
                     [ibuf.raddr[b].eq(ctl.bank_raddr[b]) for b in range(NB)],
                     meta_fifo.w_en.eq(ctl.meta_en), meta_fifo.w_data.eq(ctl.meta),
                     drain.take.eq(array.done & (d.df == Dataflow.OR)),
                     drain.meta.eq(meta_fifo.r_data),
                     [drain.results[r][c].eq(array.results[r][c])
                      for r in range(R) for c in range(C)]]
        meta_take = drain.meta_take
        passes_busy = ctl.passes_issued != drain.passes_drained
        groups_drained = None         # groups drained so far, from the unit that drains them
        if prog.stationary:
            psum = self._partial_sums(m, array, ctl, meta_fifo, meta, desc)
            units.append(psum)
            meta_take = meta_take | psum.meta_take
            groups_drained = psum.groups_drained
        m.d.comb += meta_fifo.r_en.eq(meta_take)
        rd = self._read_stage(m, ctl, ibuf.latency, prog.stationary)
        w_addr, w_data, w_latency = self._weight_read(
            m, w_port, read_port_latency(cfg.banked_weights), ctl, rd, ibuf.latency, wino)
        x_edge = self._array_edge(m, array, ibuf, w_data, rd, d)
        busy = (~loader.done | ~ctl.done | passes_busy | drain.active | ppu.busy | array.done)
        if prog.stationary:
            busy |= psum.active
        if wino:
            wt, wc = self._winograd(m, prog, array, ctl, rd, ppu_width, w_aw, desc, d, x_edge,
                                    w_latency - 1)     # (its beats: aligned to a 1-cycle read)
            units.append(wc)
            groups_drained = (wc.groups_drained if groups_drained is None else
                              Mux(d.df == Dataflow.WINOGRAD, wc.groups_drained, groups_drained))
            busy |= ((wc.passes_issued != wc.passes_drained) | wc.busy | wt.active
                     | ctl.patch.valid | rd.patch.valid)
            m.d.comb += w_port.addr.eq(w_addr | wc.w_addr)    # 0 when idle
        else:
            m.d.comb += [array.ctl_edge.eq(rd.beat), w_port.addr.eq(w_addr),
                         [array.x_edge[c].eq(x_edge[c]) for c in range(C)]]
        if groups_drained is not None:
            busy |= ctl.groups_issued != groups_drained
        add = None
        if has_add:
            m.submodules.add = add = AddUnit(prog.add_tables, prog.fm_depth, fm_aw, ppu_width,
                                             desc)
            units.append(add)
            m.d.comb += [add.fm_data_a.eq(fm_rd_a.data), add.fm_data_b.eq(fm_rd_b.data)]
            busy |= add.busy
        m.d.comb += [fm_rd_a.addr.eq(Mux(loader.fm_en, loader.fm_addr, seq.fm_rd_addr)),
                     fm_rd_b.addr.eq(ppu.rd_addr)]
        if cfg.loader_lanes > 1:
            self._loader_lane1(m, loader, ibuf, fm_rd_b, d)
        if has_add:
            with m.If(add.fm_en):
                m.d.comb += [fm_rd_a.addr.eq(add.fm_addr_a), fm_rd_b.addr.eq(add.fm_addr_b)]
        for unit in units:
            connect_desc(m, d, unit.desc)
            m.d.comb += unit.start.eq(seq.run)
        ppu_events = self._ppu_input(m, ppu, d, drain, psum if prog.stationary else None,
                                     wc if wino else None, add)
        if self.perf_counters:
            self._counters(m, seq, units + ([wt] if wino else []), ppu_events)
        m.d.comb += seq.busy.eq(busy)
        return m

    @staticmethod
    def _loader_lane1(m, loader, ibuf, fm_rd_b, d):
        """The loader's second lane: the feature map's port B in layers that pair (never with a
        fused max-pool, whose read-modify-write it serves otherwise), the tile buffer's second
        write."""
        m.d.comb += [loader.fm_data1.eq(fm_rd_b.data),
                     ibuf.wr1_en.eq(loader.wr1_en), ibuf.wr1_bank.eq(loader.wr1_bank),
                     ibuf.wr1_addr.eq(loader.wr1_addr), ibuf.wr1_data.eq(loader.wr1_data)]
        with m.If(d.ld_pair):
            m.d.comb += fm_rd_b.addr.eq(loader.fm_addr1)

    def _feature_map(self, m, fm_aw):
        """The feature-map memory: block RAM (a write port, read ports A and B; in banks:
        :class:`BankedMemory`) or one SPRAM block per slot
        (:class:`~cnnforge.hw.rtl.spram.FeatureMapSlots`). Returns the three ports (``addr``,
        ``data``, and ``en`` on the write port)."""
        prog = self.program
        if prog.config.banked_fm:
            m.submodules.fm = fm = BankedMemory(signed(8), prog.fm_depth,
                                                prog.config.fm_bank_words, read_ports=2,
                                                family=self.primitives or None)
            return (SimpleNamespace(addr=fm.w_addr, data=fm.w_data, en=fm.w_en),
                    SimpleNamespace(addr=fm.r_addr[0], data=fm.r_data[0]),
                    SimpleNamespace(addr=fm.r_addr[1], data=fm.r_data[1]))
        if not prog.config.spram_feature_maps:
            # a layer writes other slots than it reads; the fused pooling's read-modify-write
            # forwards its own writes (PostProcessor)
            m.submodules.fm = fm = memory.Memory(shape=signed(8), depth=prog.fm_depth, init=[],
                                                 attrs=NO_RW_CHECK)
            return fm.write_port(), fm.read_port(), fm.read_port()
        slot_values = prog.fm_depth // prog.fm_slots
        m.submodules.fm = fm = FeatureMapSlots(prog.fm_slots, slot_values, fm_aw,
                                               primitive=bool(self.primitives))
        return (SimpleNamespace(addr=fm.wr_addr, data=fm.wr_data, en=fm.wr_en),
                SimpleNamespace(addr=fm.rd_a_addr, data=fm.rd_a_data),
                SimpleNamespace(addr=fm.rd_b_addr, data=fm.rd_b_data))

    def _weights(self, m, seq):
        """The weight memory: a block-RAM ROM (in banks: :class:`BankedMemory`), or SPRAM
        written through ``i_weights`` while the engine is idle
        (:class:`~cnnforge.hw.rtl.spram.WeightLoader`). Returns its read port (``addr``;
        ``data``, an array of ``lanes`` weights; :func:`read_port_latency` cycles apart)."""
        prog, cfg = self.program, self.program.config
        layout = data.ArrayLayout(signed(prog.w_width), cfg.lanes)
        init = [[int(v) for v in word] for word in prog.weights]
        if cfg.banked_weights:
            m.submodules.weights = brom = BankedMemory(layout, len(init), cfg.weight_bank_words,
                                                       init=init, family=self.primitives or None)
            return SimpleNamespace(addr=brom.r_addr[0], data=brom.r_data[0])
        if not cfg.spram_weights:
            m.submodules.weights = wrom = memory.Memory(shape=layout,
                                                        depth=max(2, len(prog.weights)),
                                                        init=init)
            return wrom.read_port()
        lane_bytes = -(-prog.w_width // 8)
        m.submodules.weight_loader = loader = WeightLoader(len(prog.weights), cfg.lanes,
                                                           lane_bytes)
        m.submodules.weights = ram = SPRAM(len(prog.weights), layout.size,
                                           primitive=bool(self.primitives))
        wiring.connect(m, wiring.flipped(self.i_weights), loader.i_weights)
        port = SimpleNamespace(addr=Signal.like(ram.addr, name="w_rd_addr"),
                               data=layout(ram.rd_data))
        word = Cat(loader.wr_data.word_select(lane, 8 * lane_bytes)[:prog.w_width]
                   for lane in range(cfg.lanes))
        m.d.comb += [loader.enable.eq(seq.idle), self.weights_loaded.eq(loader.loaded),
                     loader.restart.eq(self.weights_restart),
                     ram.addr.eq(Mux(loader.wr_en, loader.wr_addr, port.addr)),
                     ram.wr_data.eq(word), ram.wr_en.eq(loader.wr_en.replicate(ram.nbytes))]
        return port

    @staticmethod
    def _read_stage(m, ctl, latency, stationary):
        """The controller's read-aligned outputs (``Controller.READ_ALIGNED``), delayed to the
        tile buffer's read ``latency`` (:func:`~cnnforge.hw.models.timing.tile_read_latency`:
        the controller's timing is that of a one-cycle read). The weight address is among them,
        so its data still comes with the bank data. Without ``stationary`` layers the preload
        strobes and the beat's stationary bits are constants the controller leaves undriven:
        not delayed (as in :func:`~cnnforge.hw.rtl.pe_array.delay_beat`)."""
        aligned = SimpleNamespace()
        for name in Controller.READ_ALIGNED:
            value = getattr(ctl, name)
            if name == "beat":
                value = delay_beat(m, value, latency - 1, "ctl_beat", stationary)
            elif stationary or not name.startswith("preload"):
                value = delay(m, value, latency - 1, f"ctl_{name}")
            setattr(aligned, name, value)
        return aligned

    def _partial_sums(self, m, array, ctl, meta_fifo, meta, desc):
        """The partial-sum buffer of the IR / WR layers and its ping-pong halves."""
        prog, C = self.program, self.program.config.cols
        m.submodules.psum_halves = psum_pp = PingPong()
        m.submodules.psum = psum = PartialSumBuffer(C, prog.acc_width, prog.psum_depth, meta,
                                                    desc)
        m.d.comb += [psum_pp.set.eq(ctl.psum_set), psum_pp.clr.eq(psum.released),
                     ctl.psum_full.eq(psum_pp.full), psum.psum_ctl.eq(array.psum_ctl),
                     [psum.psums[c].eq(array.psums[c]) for c in range(C)],
                     psum.meta.eq(meta_fifo.r_data), psum.meta_ready.eq(meta_fifo.r_rdy)]
        return psum

    @staticmethod
    def _weight_read(m, w_port, port_latency, ctl, rd, latency, wino):
        """The weight address of the direct layers and the words the array's edge takes, in the
        cycle of the tile buffer's data (its read ``latency``). With a read longer than the
        ROM's (``port_latency``: a two-cycle tile-buffer read, ECP5, or three after a banked
        ROM) the address is issued with the controller's beat ("early") and the words
        registered once after the ROM's port (its block RAMs' clock-to-out, or its bank
        multiplexer, is then not in front of the lane multiplexer and the weight skew); else
        (and in the Winograd designs of one ROM, whose unit reads the ROM a cycle before its
        beats) with the beat delayed to the tile buffer's read (``rd``). Returns ``(address,
        words, cycles from the address to the words)``."""
        early = port_latency > 1 or (latency > 1 and not wino)
        if not early:
            return rd.w_addr, w_port.data, port_latency
        assert latency == port_latency + 1
        w_data = Signal.like(w_port.data, name="w_data_q")
        m.d.sync += w_data.eq(w_port.data)
        return ctl.w_addr, w_data, latency

    @staticmethod
    def _array_edge(m, array, ibuf, w_data, rd, d):
        """The array's edges: bank data (with ``rd``, the controller's read-aligned outputs)
        rotated onto the columns, weights onto the rows (WR: the channel-banked inputs),
        stationary preloads; the depthwise row mapping's bank data onto the rows. Returns the
        columns' input values (Winograd replaces them with V words)."""
        R, C, NB = array.rows, array.cols, len(ibuf.rdata)
        is_ir, is_wr = d.df == Dataflow.IR, d.df == Dataflow.WR
        bank_data = Array(ibuf.rdata[b] for b in range(C))    # (x-banked: the first C)
        rotated = []
        for c in range(C):
            sel = Signal(range(2 * C), name=f"x_sel{c}")
            m.d.comb += sel.eq(rd.beat_q1 + c)
            value = Signal(signed(8), name=f"rotated{c}")
            m.d.comb += value.eq(bank_data[Mux(sel >= C, sel - C, sel).as_unsigned()])
            rotated.append(value)
        if array.stationary:
            m.d.comb += [array.preload_en.eq(rd.preload_en),
                         array.preload_row.eq(rd.preload_row), array.mode.eq(is_ir | is_wr),
                         [array.preload_data[c].eq(Mux(is_ir, Mux(rd.preload_zero, 0, rotated[c]),
                                                       w_data[c])) for c in range(C)]]
        for r in range(R):
            streamed_input = ibuf.rdata[r] if r < NB else 0     # WR layers have NB >= R
            # depthwise: the word holds one tap of R channels, row r's counts on its channel only
            # (the lane mapping) or on the taps of the row mapping's segment (not w_zero)
            weight = Mux((rd.lane_only & (rd.lane != r)) | rd.w_zero, 0, w_data[r])
            m.d.comb += array.w_edge[r].eq(Mux(is_wr, streamed_input, weight))
        if array.row_inputs:
            # the depthwise row mapping: bank r holds channel r of the block, row r's inputs
            m.d.comb += [array.x_from_rows.eq(d.dw_rows),
                         [array.x_rows[r].eq(ibuf.rdata[r]) for r in range(R)]]
        return rotated

    @staticmethod
    def _winograd(m, prog, array, ctl, rd, ppu_width, w_aw, desc, d, rotated, w_delay):
        """The Winograd transform units between the controller's patch reads (``rd``: its
        read-aligned outputs) and the array; the compute unit's beats and inputs delayed
        ``w_delay`` cycles more (the words of a banked weight ROM: 3 cycles after the address,
        not 1)."""
        R, C = array.rows, array.cols
        is_wino = d.df == Dataflow.WINOGRAD
        m.submodules.wino_in = wt = WinogradInputTransform(C, prog.x_width, prog.winograd_depth)
        m.submodules.wino = wc = WinogradCompute(R, C, prog.x_width, prog.acc_width,
                                                 prog.y4_width, ppu_width, prog.winograd_depth,
                                                 w_aw, desc)
        wiring.connect(m, ctl.wgroup, wc.group)
        wino_beat, wino_x = wc.beat, list(wc.x_edge)
        if w_delay:
            wino_beat = delay_beat(m, wc.beat, w_delay, "wino_beat", prog.stationary)
            wino_x = [delay(m, x, w_delay, f"wino_x{c}") for c, x in enumerate(wino_x)]
        m.d.comb += [wt.patch.eq(rd.patch), [wt.data[c].eq(rotated[c]) for c in range(C)],
                     wc.v_addr.eq(wt.v_addr), wc.v_en.eq(wt.v_en), wc.v_set.eq(wt.v_set),
                     [wc.v_data[c].eq(wt.v_data[c]) for c in range(C)],
                     ctl.v_full.eq(wc.v_full), wc.enable.eq(is_wino),
                     wc.done.eq(array.done & is_wino),
                     [wc.results[r][c].eq(array.results[r][c])
                      for r in range(R) for c in range(C)],
                     # the two issuers' beats and weight addresses are 0 when idle
                     array.ctl_edge.eq(rd.beat.as_value() | wino_beat.as_value()),
                     [array.x_edge[c].eq(Mux(is_wino, wino_x[c], rotated[c]))
                      for c in range(C)]]
        return wt, wc

    @staticmethod
    def _ppu_input(m, ppu, d, drain, psum, wino, add):
        """The post-processor's input: from the unit that drains this layer's results, with its
        destination address. Returns the post-processor's counter events."""
        ch, ox, oy = Signal(16), Signal(16), Signal(16)
        acc = Signal(signed(len(ppu.acc)))
        in_valid = Signal()
        is_or = d.df == Dataflow.OR

        def take(src):
            m.d.comb += [ch.eq(src.ch), ox.eq(src.ox), oy.eq(src.oy), acc.eq(src.acc),
                         in_valid.eq(src.valid)]

        take(drain.out)                                  # OR
        if psum is not None:
            with m.If(~is_or):                           # IR, WR
                take(psum.out)
        if wino is not None:
            with m.If(d.df == Dataflow.WINOGRAD):
                take(wino.out)
        if add is not None:
            with m.If(d.df == Dataflow.ADD):
                m.d.comb += [ch.eq(0), ox.eq(0), oy.eq(0), acc.eq(add.out_acc),
                             in_valid.eq(add.out_valid)]
        first = ((oy & d.pool_mask) == 0) & ((ox & d.pool_mask) == 0)
        index = add.index if add is not None else 0
        if psum is not None or wino is not None:
            row_addr = Mux(is_or, drain.row_addr,
                           Mux(d.df == Dataflow.ADD, d.dst + index,
                               d.dst + ch * d.PHW + (oy >> d.pshift) * d.PW))
        else:
            row_addr = Mux(is_or, drain.row_addr, d.dst + index)
        m.d.comb += [
            ppu.valid.eq(in_valid & (oy < d.oy_lim) & (ox < d.ox_lim)),
            ppu.acc.eq(acc), ppu.channel.eq(d.ch_base + ch),
            ppu.addr.eq(row_addr + (ox >> d.pshift)), ppu.first.eq(first),
        ]
        # the pooling read is used when a write is not its window's first
        return {"fm_writes": ppu.wr_en, "fm_reads": ppu.rd_en}

    @staticmethod
    def _counters(m, seq, units, ppu_events):
        """The performance counters: every unit's events, summed per counter."""
        sources = {name: [] for name in COUNTERS[1:]}
        most = {name: 0 for name in COUNTERS[1:]}
        for unit in units:
            for name, amount in unit.EVENTS.items():
                sources[name].append(unit.events[name])
                most[name] += amount
        for name, value in ppu_events.items():
            sources[name].append(value)
            most[name] += 1
        m.submodules.counters = counters = PerfCounters(most)
        for name, values in sources.items():
            m.d.comb += counters.events[name].eq(sum(values))
        m.d.comb += [counters.clear.eq(seq.clear_counters), counters.start.eq(seq.start),
                     counters.running.eq(seq.running),
                     [seq.counters[i].eq(counters.counters[i]) for i in range(len(COUNTERS))]]


def elaborate(qnet, config=None, **kwargs):
    """Compile ``qnet`` for ``config`` and return ``(Accelerator, Program)``.

    Raises ``NetworkError`` / ``ConfigError`` (see :func:`compile_network`)."""
    program = compile_network(qnet, config, **kwargs)
    return Accelerator(program), program
