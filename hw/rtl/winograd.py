"""Winograd F(2×2, 3×3) on the PE array (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016): input transform ``V = Bᵀ d B`` per 4×4 patch, 16 GEMMs over channels on
the array (one per transform position ξ, with the compile-time weights ``U = G g Gᵀ``, G scaled
by 2), output transform ``4Y = Aᵀ m A``. The matrices and the arithmetic are
:mod:`cnnforge.sim.winograd`'s."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.rtl.common import Events, PingPong, bits, desc_layout, one_hot
from cnnforge.hw.rtl.drain import ppu_input_layout
from cnnforge.hw.rtl.pe_array import BeatControl
from cnnforge.sim.winograd import AT, BT

__all__ = ["WinogradCompute", "WinogradInputTransform", "group_layout", "patch_layout"]

#: A group of C tiles of one tile row: tile row ``ty``, first tile column ``tx0``, ``tx_end``.
group_layout = data.StructLayout({"ty": 16, "tx0": 16, "tx_end": 16})

#: One element of a 4×4 input patch, registered alongside its tile-buffer read: ``ij`` its
#: position (4·i + j), ``n`` its channel, ``half`` the V-buffer half, ``first``/``last`` of the
#: patch, ``group_last``: the group's last patch.
patch_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "ij": 4, "n": 16,
                                  "half": 1, "group_last": 1})


class WinogradInputTransform(wiring.Component):
    """``V = Bᵀ d B`` of C patches at once, accumulated over the 16 reads of a patch (Bᵀ's
    entries are 0 and ±1: adders only), then written to the V buffer in 16 cycles (word
    ``half·depth + 16·n + ξ`` of bank c).

    Members
    -------
    patch : In(patch_layout)
        The element arriving this cycle on ``data``.
    data : In(signed(8)).array(cols)
        The C patches' elements (bank-rotated onto the columns).
    v_addr, v_data, v_en : Out
        The V-buffer write of this cycle (one word per column).
    v_set : Out(2)
        One-hot: the half whose group has been written completely.
    active : Out(1)
    """

    def __init__(self, cols, x_width, depth):
        self._cols, self._depth = cols, depth
        self.EVENTS = {"ibuf_writes": cols}
        super().__init__({
            "patch": In(patch_layout), "data": In(signed(8)).array(cols),
            "v_addr": Out(bits(2 * depth - 1)), "v_data": Out(signed(x_width)).array(cols),
            "v_en": Out(1), "v_set": Out(2), "active": Out(1),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def elaborate(self, platform):
        m = Module()
        C, t = self._cols, self.patch
        events = Events(m)
        xw = len(self.v_data[0])
        vacc = [[Signal(signed(xw), name=f"vacc{c}_{x}") for x in range(16)] for c in range(C)]
        vout = [[Signal(signed(xw), name=f"vout{c}_{x}") for x in range(16)] for c in range(C)]
        count, n, half, group_last = Signal(4), Signal(16), Signal(), Signal()
        with m.If(self.active):
            m.d.comb += [self.v_addr.eq(Mux(half, self._depth, 0) + n * 16 + count),
                         self.v_en.eq(1)]
            m.d.comb += [self.v_data[c].eq(Array(vout[c])[count]) for c in range(C)]
            events.count("ibuf_writes", C)
            m.d.sync += count.eq(count + 1)
            with m.If(count == 15):
                m.d.sync += self.active.eq(0)
                with m.If(group_last):
                    m.d.comb += self.v_set.eq(one_hot(half))
        with m.If(t.valid):
            with m.Switch(t.ij):
                for i in range(4):
                    for j in range(4):
                        with m.Case(i * 4 + j):
                            for c in range(C):
                                self._accumulate(m, vacc[c], vout[c], self.data[c], i, j)
            with m.If(t.last):
                m.d.sync += [self.active.eq(1), count.eq(0), n.eq(t.n), half.eq(t.half),
                             group_last.eq(t.group_last)]
        events.drive(self.events)
        return m

    def _accumulate(self, m, vacc, vout, dval, i, j):
        """Add input element d[i][j] into the 16 sums V[a][b] += Bᵀ[a][i]·Bᵀ[b][j]·d[i][j]."""
        t = self.patch
        for a in range(4):
            for b in range(4):
                coef = int(BT[a][i] * BT[b][j])
                x = a * 4 + b
                base = Mux(t.first, 0, vacc[x])
                new = base + dval if coef > 0 else base - dval if coef < 0 else base
                m.d.sync += vacc[x].eq(new)
                with m.If(t.last):
                    m.d.sync += vout[x].eq(new)


class WinogradCompute(wiring.Component):
    """The V buffer, the 16 GEMMs per group on the array and the output transform.

    For each group (C tiles) and each block of R output channels, 16 passes (one per transform
    position ξ) of N beats stream V (one word per column) and U (one weight per row) through the
    output-stationary array; as each pass finishes, its R×C sums are added into the output
    transform's accumulators ``4Y[i][j] += Aᵀ[i][ξ/4]·Aᵀ[j][ξ%4]·m_ξ`` (four lanes per tile);
    after the 16th pass the set's 4·R·C outputs go to the post-processor, one per cycle (``4Y``
    shifted right by 2: exact).

    Members
    -------
    start : In(1)
    group : In(stream.Signature(group_layout))
        From the controller, one per group whose patches it is reading.
    v_full : Out(2)
        V-buffer halves written by the input transform and not yet consumed.
    v_addr, v_data, v_en, v_set : In
        The input transform's writes.
    beat, w_addr : Out(BeatControl), Out(w_addr_width)
        The array's beat control and the weight ROM's address while a pass streams.
    x_edge : Out(signed(x_width)).array(cols)
        V words onto the array's columns.
    done, results : In(1), In(signed(acc_width)).array(cols).array(rows)
        The array's finished passes.
    out : Out(ppu_input_layout)
    busy : Out(1)
    """

    FIELDS = ("M", "K", "last_K", "last_L", "last_MB", "w_base")

    def __init__(self, rows, cols, x_width, acc_width, y4_width, ppu_width, depth, w_aw, desc):
        self._rows, self._cols, self._depth = rows, cols, depth
        self._y4, self._acc = y4_width, acc_width
        self.EVENTS = {"ibuf_reads": cols, "weight_reads": 1, "obuf_writes": cols,
                       "obuf_reads": cols + 1}
        v_aw = bits(2 * depth - 1)
        super().__init__({
            "desc": In(desc_layout(desc, self.FIELDS)),
            "start": In(1), "enable": In(1),
            "group": In(stream.Signature(group_layout)),
            "v_full": Out(2), "v_addr": In(v_aw), "v_data": In(signed(x_width)).array(cols),
            "v_en": In(1), "v_set": In(2),
            "beat": Out(BeatControl), "w_addr": Out(w_aw),
            "x_edge": Out(signed(x_width)).array(cols),
            "done": In(1), "results": In(signed(acc_width)).array(cols).array(rows),
            "out": Out(ppu_input_layout(ppu_width)), "busy": Out(1),
            "passes_issued": Out(8), "passes_drained": Out(8), "groups_drained": Out(8),
            "events": Out(Events.layout(self.EVENTS)),
        })

    def elaborate(self, platform):
        m = Module()
        C, depth = self._cols, self._depth
        events = Events(m)
        m.submodules.v_ping_pong = v_pp = PingPong()
        vb_rd = []
        for c in range(C):
            mem = memory.Memory(shape=self.v_data[c].shape(), depth=2 * depth, init=[])
            m.submodules[f"vbuf{c}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.v_addr), wp.data.eq(self.v_data[c]),
                         wp.en.eq(self.v_en)]
            vb_rd.append(mem.read_port())
            m.d.comb += self.x_edge[c].eq(vb_rd[c].data)
        m.d.comb += [v_pp.set.eq(self.v_set), self.v_full.eq(v_pp.full)]
        m.submodules.groups = groups = fifo.SyncFIFOBuffered(width=group_layout.size, depth=4)
        m.d.comb += [groups.w_data.eq(self.group.payload), groups.w_en.eq(self.group.valid),
                     self.group.ready.eq(groups.w_rdy)]
        pass_layout = data.StructLayout({"xi": 4, "half": 1})
        set_layout = data.StructLayout({"m0": 16, "ty": 16, "tx0": 16, "tx_end": 16, "half": 1})
        m.submodules.wpasses = passes = fifo.SyncFIFOBuffered(width=pass_layout.size, depth=4)
        m.submodules.wsets = sets = fifo.SyncFIFOBuffered(width=set_layout.size, depth=4)
        m.submodules.o_busy = o_busy = PingPong()
        m.submodules.o_ready = o_ready = PingPong()
        wsets_issued, wsets_done = Signal(8), Signal(8)      # modulo 2^8
        cf_busy = self._compute(m, events, groups, v_pp, vb_rd, passes, sets, o_busy,
                                pass_layout, set_layout, wsets_issued)
        ot_active, o_done = self._output_transform(m, events, passes, pass_layout, o_ready)
        sr_active = self._serialize(m, events, sets, set_layout, o_busy, o_ready, wsets_done)
        m.d.comb += self.busy.eq(cf_busy | groups.r_rdy | ot_active | sr_active | o_done
                                 | (o_ready.full != 0) | (wsets_issued != wsets_done))
        events.drive(self.events)
        return m

    def _compute(self, m, events, groups, v_pp, vb_rd, passes, sets, o_busy, pass_layout,
                 set_layout, wsets_issued):
        """For each group, for each block of R channels, 16 passes of N beats."""
        R, C, d = self._rows, self._cols, self.desc
        cf_group = Signal(group_layout)
        cf_vh, cf_oh = Signal(), Signal()
        cf_mb, cf_m0, cf_xi, cf_s = Signal(16), Signal(16), Signal(4), Signal(16)
        cf_busy = Signal()
        cf_w = Signal.like(self.w_addr)
        pw_w, sw_w = Signal(pass_layout), Signal(set_layout)
        m.d.comb += [passes.w_data.eq(pw_w), sets.w_data.eq(sw_w)]
        m.d.sync += self.beat.eq(0)
        with m.FSM(name="wino_compute"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [cf_vh.eq(0), cf_oh.eq(0), wsets_issued.eq(0),
                                 self.groups_drained.eq(0)]
                with m.Elif(self.enable & groups.r_rdy & v_pp.full.bit_select(cf_vh, 1)):
                    m.d.comb += groups.r_en.eq(1)
                    m.d.sync += [cf_group.eq(groups.r_data), cf_mb.eq(0), cf_m0.eq(0),
                                 cf_w.eq(d.w_base)]
                    m.next = "BLOCK"
            with m.State("BLOCK"):
                m.d.comb += cf_busy.eq(1)
                with m.If(~o_busy.full.bit_select(cf_oh, 1) & sets.w_rdy):
                    m.d.comb += [o_busy.set.eq(one_hot(cf_oh)), sets.w_en.eq(1),
                                 sw_w.m0.eq(cf_m0), sw_w.ty.eq(cf_group.ty),
                                 sw_w.tx0.eq(cf_group.tx0), sw_w.tx_end.eq(cf_group.tx_end),
                                 sw_w.half.eq(cf_oh)]
                    m.d.sync += [cf_xi.eq(0), cf_s.eq(0), wsets_issued.eq(wsets_issued + 1)]
                    m.next = "PASS"
            with m.State("PASS"):
                m.d.comb += cf_busy.eq(1)
                valid = cf_s < d.K
                for c in range(C):
                    m.d.comb += vb_rd[c].addr.eq(Mux(cf_vh, self._depth, 0) + cf_s * 16 + cf_xi)
                m.d.comb += self.w_addr.eq(cf_w)
                m.d.sync += [self.beat.valid.eq(valid), self.beat.first.eq(cf_s == 0),
                             self.beat.last.eq(cf_s == d.last_K)]
                m.d.comb += [passes.w_en.eq(cf_s == 0), pw_w.xi.eq(cf_xi), pw_w.half.eq(cf_oh)]
                with m.If(valid):
                    m.d.sync += cf_w.eq(cf_w + 1)
                    events.count("ibuf_reads", C)
                    events.count("weight_reads")
                with m.If(cf_s == d.last_L):
                    m.d.sync += [cf_s.eq(0), self.passes_issued.eq(self.passes_issued + 1)]
                    with m.If(cf_xi != 15):
                        m.d.sync += cf_xi.eq(cf_xi + 1)
                    with m.Else():
                        m.d.sync += cf_oh.eq(~cf_oh)
                        with m.If(cf_mb != d.last_MB):
                            m.d.sync += [cf_mb.eq(cf_mb + 1), cf_m0.eq(cf_m0 + R)]
                            m.next = "BLOCK"
                        with m.Else():
                            m.d.comb += v_pp.clr.eq(one_hot(cf_vh))
                            m.d.sync += [cf_vh.eq(~cf_vh),
                                         self.groups_drained.eq(self.groups_drained + 1)]
                            m.next = "IDLE"
                with m.Else():
                    m.d.sync += cf_s.eq(cf_s + 1)
        with m.If(self.start):
            m.d.sync += self.passes_issued.eq(0)
        return cf_busy

    def _output_transform(self, m, events, passes, pass_layout, o_ready):
        """As the 16 passes finish: per column c, word (half, r) holds 4Y[i][j] of output channel
        m0 + r of tile c (4 lanes)."""
        R, C = self._rows, self._cols
        ot_layout = data.ArrayLayout(signed(self._y4), 4)
        ot_wr, ot_rd, self._ot_sr = [], [], []
        for c in range(C):
            mem = memory.Memory(shape=ot_layout, depth=2 * R, init=[])
            m.submodules[f"otbuf{c}"] = mem
            wp = mem.write_port()
            ot_wr.append(wp)
            ot_rd.append(mem.read_port(transparent_for=(wp,)))
            self._ot_sr.append(mem.read_port())
        ot_active, ot_r = Signal(), Signal(range(max(2, R)))
        ot_meta = Signal(pass_layout)
        o_valid, o_first, o_addr, o_xi, o_done = (Signal(), Signal(), Signal(bits(2 * R)),
                                                  Signal(4), Signal())
        o_res = [Signal(signed(self._acc), name=f"o_res{c}") for c in range(C)]
        o_done_half = Signal()
        results = Array(Array(self.results[r][c] for c in range(C)) for r in range(R))
        m.d.sync += [o_valid.eq(0), o_done.eq(0)]
        with m.If(self.done):
            m.d.comb += passes.r_en.eq(1)
            m.d.sync += [ot_active.eq(1), ot_r.eq(0),
                         ot_meta.eq(data.View(pass_layout, passes.r_data))]
        with m.Elif(ot_active):
            addr = Mux(ot_meta.half, R, 0) + ot_r
            for c in range(C):
                m.d.comb += ot_rd[c].addr.eq(addr)
            m.d.sync += [o_valid.eq(1), o_first.eq(ot_meta.xi == 0), o_addr.eq(addr),
                         o_xi.eq(ot_meta.xi)]
            m.d.sync += [o_res[c].eq(results[ot_r][c]) for c in range(C)]
            events.count("obuf_writes", C)
            with m.If(ot_meta.xi != 0):
                events.count("obuf_reads", C)
            with m.If(ot_r == R - 1):
                m.d.sync += [ot_active.eq(0), self.passes_drained.eq(self.passes_drained + 1),
                             o_done.eq(ot_meta.xi == 15), o_done_half.eq(ot_meta.half)]
            with m.Else():
                m.d.sync += ot_r.eq(ot_r + 1)
        with m.If(self.start):
            m.d.sync += self.passes_drained.eq(0)
        coefs = [Array(Const(int(AT[i][x // 4] * AT[j][x % 4]), signed(2)) for x in range(16))
                 for i in range(2) for j in range(2)]
        for c in range(C):
            m.d.comb += [ot_wr[c].addr.eq(o_addr), ot_wr[c].en.eq(o_valid)]
            for lane in range(4):
                coef = coefs[lane][o_xi]
                term = Mux(coef == 0, 0, Mux(coef > 0, o_res[c], -o_res[c]))
                m.d.comb += ot_wr[c].data[lane].eq(Mux(o_first, 0, ot_rd[c].data[lane]) + term)
        with m.If(o_done):
            m.d.comb += o_ready.set.eq(one_hot(o_done_half))
        return ot_active, o_done

    def _serialize(self, m, events, sets, set_layout, o_busy, o_ready, wsets_done):
        """The 4·R·C outputs of a finished set, one per cycle, to the post-processor."""
        R, C, d = self._rows, self._cols, self.desc
        sr_active, sr_half = Signal(), Signal()
        sr_r, sr_c, sr_q = Signal(range(max(2, R))), Signal(range(max(2, C))), Signal(2)
        sr_meta = Signal(set_layout)
        sr_valid_d, sr_c_d, sr_q_d = Signal(), Signal(range(max(2, C))), Signal(2)
        sr_info = Signal(data.StructLayout({"ch": 16, "oy": 16, "ox": 16, "ok": 1}))
        m.d.sync += sr_valid_d.eq(0)
        with m.If(~sr_active & o_ready.full.bit_select(sr_half, 1) & sets.r_rdy):
            m.d.comb += sets.r_en.eq(1)
            m.d.sync += [sr_active.eq(1), sr_meta.eq(data.View(set_layout, sets.r_data)),
                         sr_r.eq(0), sr_c.eq(0), sr_q.eq(0)]
        with m.If(sr_active):
            for c in range(C):
                m.d.comb += self._ot_sr[c].addr.eq(Mux(sr_half, R, 0) + sr_r)
            with m.If(sr_q == 0):
                events.count("obuf_reads")
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
                        m.d.comb += [o_busy.clr.eq(one_hot(sr_half)),
                                     o_ready.clr.eq(one_hot(sr_half))]
                        m.d.sync += [sr_active.eq(0), sr_half.eq(~sr_half),
                                     wsets_done.eq(wsets_done + 1)]
                with m.Else():
                    m.d.sync += sr_c.eq(sr_c + 1)
        with m.If(self.start):
            m.d.sync += [sr_half.eq(0), wsets_done.eq(0)]
        word = Array(port.data for port in self._ot_sr)[sr_c_d]
        out = self.out
        m.d.comb += [
            out.valid.eq(sr_valid_d & sr_info.ok & (sr_info.ch < d.M)),
            out.acc.eq(word[sr_q_d] >> 2),        # exact: 4Y is a multiple of 4
            out.ch.eq(sr_info.ch), out.oy.eq(sr_info.oy), out.ox.eq(sr_info.ox)]
        return sr_active
