"""Post-processing unit: bias, requantization, activation clamp, max-pool, write-back.

Takes one finished accumulator per cycle (no back-pressure, fixed latency) and writes the int8
result into the feature-map memory. The arithmetic is the golden model's
:func:`cnnforge.sim.golden.requantize` bit for bit, in the network's rounding:

``y = clamp(z_out + RoundingDivideByPOT(SRDHM(acc + bias[m], M0[m]), n[m]), lo, hi)``
(``"gemmlowp"``) or ``y = clamp(z_out + round_shift_half_even((acc + bias[m])·M0[m], 31 +
n[m]), lo, hi)`` (``"nearest-even"``, imported ONNX QDQ models).

Max-pooling (kernel = stride, a power of two) is fused as a read-modify-write on the destination
feature map: the first contribution to a window (its top-left pixel, which the controllers always
produce first for each channel) is written, later ones write ``max(old, y)``. The old value is
read four cycles before the (registered) write and registered twice (straight out of the block
RAM, then after the forwarding), so that the block RAM's clock-to-out is not in front of any
logic; the unit forwards its own writes of the four cycles in between (the read port need not
be transparent), so back-to-back updates of one window see each other.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.timing import ppu_latency
from cnnforge.hw.rtl.banked import BankedMemory
from cnnforge.hw.rtl.common import bits, delay, delay_line, product_register
from cnnforge.sim.golden import ROUNDINGS

__all__ = ["ChannelParams", "PostProcessor", "datapath_widths"]


class ChannelParams(data.Struct):
    """Per output channel constants in the parameter ROM."""
    bias: signed(32)        # int32 bias, input zero point folded in
    multiplier: unsigned(31)  # M0 in [2^30, 2^31), or 0
    shift: unsigned(5)      # right shift n in [0, 31]


def datapath_widths(acc_width, params):
    """How wide the requantizer's datapath must be for these parameters: ``(x_width,
    shift_max)``, ``x_width`` the signed width of ``acc + bias`` over every ``acc_width``-bit
    accumulator and every channel's bias (at least 17, so that ``x`` has a high half beside its
    low 16 bits, and at most 32: the contract ``|acc + bias| < 2^31``), ``shift_max`` the
    largest right shift ``n``. The unit's registers after the bias are sized from them (the
    product ``x·M0`` has ``x_width + 31`` bits, SRDHM's result ``x_width``, the rounding term
    ``shift_max + 1``), so that a network's requantizer is as wide as its values (the MLPerf
    Tiny KWS model: 20-bit accumulators, biases −239,531 … 157,975, so ``x`` 21 bits; shifts up
    to 9) and not int32 throughout."""
    biases = [int(p["bias"]) for p in params] or [0]
    lo = -(1 << (acc_width - 1)) + min(biases)
    hi = (1 << (acc_width - 1)) - 1 + max(biases)
    x_width = min(32, max(17, Shape.cast(range(min(lo, -1), hi + 1)).width))     # signed
    return x_width, max((int(p["shift"]) for p in params), default=0)


def _resized(m, value, shape, name):
    """``value`` as a ``shape`` signal of ``m`` (truncated, or extended as its own signedness
    says): a narrower product sign-extended to the int32 limbs the sums slice, a wide sum cut to
    the bits its value can have."""
    sig = Signal(shape, name=name)
    m.d.comb += sig.eq(value)
    return sig


class PostProcessor(wiring.Component):
    """Bias + requantize + clamp + fused max-pool, one result every ``interval`` cycles.

    Parameters
    ----------
    acc_width : int
        Width of the incoming accumulators (signed). With ``params`` it sets the datapath after
        the bias (:func:`datapath_widths`).
    params : list of dict
        Parameter ROM contents, one ``{"bias", "multiplier", "shift"}`` per output channel of
        the whole network (a layer addresses its channels from its ``ch_base``).
    addr_width : int
        Feature-map address width.
    rounding : ``"gemmlowp"`` or ``"nearest-even"``
        The requantizer (:data:`cnnforge.sim.golden.ROUNDINGS`); both have the same latency.
    family : ``"ice40"``, ``"ecp5"`` or None
        The FPGA family synthesized for (None: simulation): the partial products in the DSP
        blocks' registers (:func:`~cnnforge.hw.rtl.common.product_register`).
    interval : int
        Cycles between input beats: 1 (four DSP blocks multiply at once) or 2 (two blocks,
        time-shared: the first products kept a stage, the sum in two stages; the same
        latency).
    pooling : bool
        Whether a layer of the network has a fused max-pool: without, the unit never reads the
        feature map (no read-modify-write, ``rd_en`` stays low, ``first`` is ignored).
    param_bank_words : int
        0: the parameter ROM is one block-RAM memory read in a cycle. N (a power of two): a
        :class:`~cnnforge.hw.rtl.banked.BankedMemory` of banks of N words (the ECP5 designs,
        ``AcceleratorConfig.weight_bank_words``: the VWW core's 12-block ROM had 10.5-10.9 ns
        from its blocks into the parameters' registers), three cycles more latency.
    hold_by_enable : bool or None
        How the max-pool's compare reaches its running value ``old``: as the register's enable
        alone (True; one LUT after the compare's carry chain: the ECP5 25F digits core's loop,
        8.5 ns before) or through the forwarding multiplexer into its data (False). None: True
        except on iCE40, where the eight logic cells of a tile share one clock enable and the
        enable form placed slower (UP5K digits 42.7 against 44.6 MHz median over six seeds).

    Raises
    ------
    ValueError
        For an unknown ``rounding`` or an ``interval`` other than 1 or 2.

    Members
    -------
    valid, acc, channel, addr, first : In
        One beat: accumulator, global channel index (parameter ROM address), destination
        address, and whether it is the first contribution to its pooling window (always 1
        without pooling). No back-pressure.
    zero_point, act_min, act_max : In(signed(9))
        Layer constants, held while the layer runs.
    rd_addr : Out, rd_data : In(signed(8))
        Read port on the feature map, one cycle latency (read-before-write or transparent: a
        value written in the cycle of the read is forwarded by the unit either way).
    wr_addr, wr_data, wr_en : Out
        Write port on the feature map.
    rd_en : Out(1)
        The pooling read issued on ``rd_addr`` this cycle is used (a beat that is not its
        window's first): the engine counts feature-map reads from it.
    busy : Out(1)
        A beat is still in the pipeline.
    latency : int
        Cycles from a beat at the input to its write (``ppu_latency(banked)``, from
        :mod:`cnnforge.hw.models.timing`; 14 at an interval of 1: the input beat is registered
        while the parameter ROM reads (four cycles from a banked ROM), then the parameters
        registered, bias, four registered 16×16 partial products, three adder levels to the
        64-bit product (16-bit adds, then 32: ``_product_sum``), four for the rounding
        (gemmlowp: two for SRDHM, then add and shift; nearest-even: rounding term, add, shift
        in two steps), one for the zero point's add beside the range test, one for the clamp
        (and the fused max-pool's compare), one for the write).
        Every input goes straight into a register (the channel into the parameter ROM's address
        register), so the engine may compute the beat combinationally; one adder or one DSP
        multiply per stage keeps the unit off the critical path (docs/boards.md).
    """

    def __init__(self, acc_width, params, addr_width, rounding="gemmlowp", *, family=None,
                 interval=1, pooling=True, param_bank_words=0, hold_by_enable=None):
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding={rounding!r}: choose one of {', '.join(ROUNDINGS)}")
        if interval not in (1, 2):
            raise ValueError(f"interval={interval!r}: a post-processor takes a beat every 1 or "
                             f"2 cycles")
        self.interval, self.pooling = interval, pooling
        self.hold_by_enable = family != "ice40" if hold_by_enable is None else hold_by_enable
        self.param_bank_words = param_bank_words
        self.latency = ppu_latency(param_bank_words > 0)
        self.acc_width = acc_width
        self.params = params
        self.x_width, self.shift_max = datapath_widths(acc_width, params)
        self.n_width = bits(self.shift_max)
        self.rounding = rounding
        self.family = family
        super().__init__({
            "valid": In(1), "acc": In(signed(acc_width)),
            "channel": In(range(max(2, len(params)))),
            "addr": In(addr_width), "first": In(1),
            "zero_point": In(signed(9)), "act_min": In(signed(9)), "act_max": In(signed(9)),
            "rd_addr": Out(addr_width), "rd_data": In(signed(8)),
            "wr_addr": Out(addr_width), "wr_data": Out(signed(8)), "wr_en": Out(1),
            "rd_en": Out(1), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # in block RAM even when small: in logic it would cost ~200 iCE40 cells
        block = {"rom_style": "block"}
        if self.param_bank_words:
            m.submodules.rom = rom = BankedMemory(ChannelParams, len(self.params),
                                                  self.param_bank_words, init=self.params,
                                                  attrs=block, family=self.family)
            port, reads = SimpleNamespace(addr=rom.r_addr[0], data=rom.r_data[0]), rom.latency
        else:
            m.submodules.rom = rom = memory.Memory(shape=ChannelParams,
                                                   depth=max(2, len(self.params)),
                                                   init=self.params, attrs=block)
            port, reads = rom.read_port(), 1

        # Every stage below is one register level; data registers are reset-less so that yosys
        # can pack the ones around the multiplies into the DSP blocks' own registers.
        def stage(name, shape):
            return Signal(shape, name=name, reset_less=True)

        def delayed(value, name, depth, reset_less=True):
            """``value`` through ``depth`` registers (returns the list of stages)."""
            out = []
            for i in range(depth):
                reg = Signal(value.shape(), name=f"{name}{i + 1}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                out.append(reg)
                value = reg
            return out

        # the stages up to the write's value; the write itself is registered once more (the
        # last stage), so that no compare or multiplexer is in front of the feature map's port
        n_stages = self.latency - 1
        valid = delayed(self.valid, "v", n_stages, reset_less=False)   # a reset empties it
        # the destination address: a RAM delay line for the first n_stages − 4 cycles (16 bits
        # a word: one iCE40 block RAM for an address of up to 16 bits), registers for the last
        # four (the pooling read, three cycles before the write's value, is issued from a
        # register); without pooling, n_stages − 1 cycles and one register
        tail = 4 if self.pooling else 1
        addr = delayed(delay_line(m, self.addr, n_stages - tail, "addr_delay", self.family),
                       "addr", tail)
        first = delayed(self.first, "first", n_stages) if self.pooling else None

        # stage 0: the input beat is registered while the parameter ROM reads the beat's
        # channel (its address register is the block RAM's own; a banked ROM's read takes two
        # stages more, the numbering below counts from its last); stage 1: the parameters are
        # registered (the block RAM's clock-to-out is not in front of the bias adder)
        acc0 = delay(m, self.acc, reads, "acc0")
        acc1 = stage("acc1", signed(self.acc_width))
        xw, nw = signed(self.x_width), self.n_width
        bias1, m01, n1 = stage("bias1", xw), stage("m01", unsigned(31)), stage("n1", nw)
        m.d.comb += port.addr.eq(self.channel)
        m.d.sync += [acc1.eq(acc0), bias1.eq(port.data.bias),
                     m01.eq(port.data.multiplier), n1.eq(port.data.shift)]
        at = valid[reads - 1:]          # at[k]: the beat in stage k (k ≥ 1)
        # stage 2: x = acc + bias (the compiler guarantees int32 range); with an interval of
        # two registered on a beat only (held through its two cycles of multiplies)
        x2, m02, n2 = stage("x2", xw), stage("m02", unsigned(31)), stage("n2", nw)
        stage2 = [x2.eq(acc1 + bias1), m02.eq(m01), n2.eq(n1)]
        if self.interval > 1:
            with m.If(at[1]):
                m.d.sync += stage2
        else:
            m.d.sync += stage2
        # stage 3: x·M0 as four 16×16 partial products between registers (each fits one DSP
        # block): x's high half signed, its low half and M0's halves unsigned (each block
        # multiplies its operands signed as their shapes)
        products = self._products(m, stage, x2, m02, n2, at)
        # stages 4-6: the sum of the partial products, no carry chain longer than 16 bits out
        # of a DSP block or 32 bits between registers (docs/boards.md); time-shared, stages 5-6
        # after the products kept in stage 4
        sum_stages = self._product_sum if self.interval == 1 else self._product_sum_shared
        ab_hi6, any6, all6, n6 = sum_stages(m, stage, *products)
        if self.rounding == "gemmlowp":
            sh10 = self._gemmlowp(m, stage, ab_hi6, any6, all6, n6)
        else:
            sh10 = self._nearest_even(m, stage, ab_hi6, any6, n6)
        y12 = self._clamp(m, stage, sh10)
        w_data = self._pool(m, stage, valid, addr, first, y12) if self.pooling else y12
        m.d.sync += [self.wr_en.eq(valid[-1]), self.wr_addr.eq(addr[-1]),
                     self.wr_data.eq(w_data)]
        m.d.comb += self.busy.eq(self.valid | Cat(*valid).any() | self.wr_en)
        return m

    def _pool(self, m, stage, valid, addr, first, y):
        """The fused max-pool's read-modify-write: the pooling read issued three cycles before
        the value of the write is formed (four before the registered write reaches the feature
        map), its data registered as it comes out of the block RAM (``rd_q``: nothing between
        the RAM and that register); a cycle later the window's value so far is the newest of:
        the write formed this cycle and the three before it (the last three still on their way
        to the memory), the read data. Which of them hit the window is decided a cycle ahead
        (``hit0..3``, registered, from the address stages one step earlier), so only the
        newest hit's multiplexer stands after the compare; with ``hold_by_enable`` only the
        register's enable (hit 0 by a window's later write: ``old`` holds unless ``y > old``,
        and otherwise takes a value that needs no compare: y or the older writes' and read's).
        The write's value is ``max(old, y)`` unless the beat is its window's first; returns
        it."""
        m.d.comb += self.rd_addr.eq(addr[-4])
        rd_q = stage("rd_q", signed(8))
        m.d.sync += rd_q.eq(self.rd_data)
        old, gt = stage("old", signed(8)), Signal(name="pool_gt")
        w_data = Signal(signed(8), name="pool_data")
        m.d.comb += [gt.eq(y > old), w_data.eq(Mux(first[-1] | gt, y, old))]
        # the writes formed 1 (the registered outputs), 2 and 3 cycles ago
        wr2_en, wr2_addr = Signal(name="wr2_en"), stage("wr2_addr", addr[-1].shape())
        wr2_data, wr3_data = stage("wr2_data", signed(8)), stage("wr3_data", signed(8))
        m.d.sync += [wr2_en.eq(self.wr_en), wr2_addr.eq(self.wr_addr),
                     wr2_data.eq(self.wr_data), wr3_data.eq(wr2_data)]
        # hit k, computed two cycles before a write's value is formed (its address is addr[-3]
        # then): the write formed k + 1 cycles before it goes to the same window (k = 0: the
        # one formed next cycle, whose address is addr[-2] now)
        hits = [Signal(name=f"hit{k}") for k in range(4)]
        m.d.sync += [hits[0].eq(valid[-2] & (addr[-2] == addr[-3])),
                     hits[1].eq(valid[-1] & (addr[-1] == addr[-3])),
                     hits[2].eq(self.wr_en & (self.wr_addr == addr[-3])),
                     hits[3].eq(wr2_en & (wr2_addr == addr[-3]))]
        # the newest of the writes formed 1 to 3 cycles ago that hits, else the read
        older = Signal(signed(8), name="pool_older")
        m.d.comb += older.eq(rd_q)
        for hit, value in reversed(list(zip(hits[1:], (self.wr_data, wr2_data, wr3_data)))):
            with m.If(hit):
                m.d.comb += older.eq(value)
        if self.hold_by_enable:
            with m.If(~hits[0] | first[-1] | gt):
                m.d.sync += old.eq(Mux(hits[0], y, older))
        else:
            m.d.sync += old.eq(Mux(hits[0], w_data, older))
        m.d.comb += self.rd_en.eq(valid[-4] & ~first[-4])
        return w_data

    def _products(self, m, stage, x2, m02, n2, at):
        """Stage 3 (two stages with an interval of two): the partial products
        ``x_lo·M0_lo, x_lo·M0_hi, x_hi·M0_lo, x_hi·M0_hi`` and the shift ``n`` beside them.
        An interval of one multiplies in four DSP blocks at once; two time-shares two blocks
        (``x_lo`` and ``x_hi``), ``M0_lo`` in the beat's first cycle and ``M0_hi`` in its
        second, the first products kept in registers. Returns ``pll``'s high half and whether
        its low half is any or all ones (all the sum needs of it: with an interval of two they
        are what is kept), ``plh, phl, phh`` and ``n``. ``x_hi`` has ``x_width − 16`` bits, so
        ``phl`` has ``x_width`` and ``phh`` ``x_width − 1``."""
        x_lo, x_hi = x2[:16], x2[16:].as_signed()
        xw, nw = self.x_width, self.n_width
        n3 = stage("n3", nw)
        m.d.sync += n3.eq(n2)
        if self.interval == 1:
            pll3, plh3 = stage("pll3", 32), stage("plh3", 31)
            phl3, phh3 = stage("phl3", signed(xw)), stage("phh3", signed(xw - 1))
            for name, product, a, b in (("pll", pll3, x_lo, m02[:16]),
                                        ("plh", plh3, x_lo, m02[16:]),
                                        ("phl", phl3, x_hi, m02[:16]),
                                        ("phh", phh3, x_hi, m02[16:])):
                product_register(m, self.family, f"mult_{name}", a, b, product)
            return pll3[16:], pll3[:16].any(), pll3[:16].all(), plh3, phl3, phh3, n3
        # at[2]: the beat's first cycle in x2 (M0_lo), else its second (M0_hi)
        m0_half = Signal(16, name="m0_half")
        m.d.comb += m0_half.eq(Mux(at[2], m02[:16], m02[16:]))
        p_lo, p_hi = stage("p_lo3", 32), stage("p_hi3", signed(xw))
        product_register(m, self.family, "mult_lo", x_lo, m0_half, p_lo)
        product_register(m, self.family, "mult_hi", x_hi, m0_half, p_hi)
        pll_hi, phl, n = stage("pll_kept", 16), stage("phl_kept", signed(xw)), stage("n_kept", nw)
        pll_any, pll_all = stage("pll_any_kept", 1), stage("pll_all_kept", 1)
        m.d.sync += [pll_hi.eq(p_lo[16:]), pll_any.eq(p_lo[:16].any()),
                     pll_all.eq(p_lo[:16].all()), phl.eq(p_hi), n.eq(n3)]
        return pll_hi, pll_any, pll_all, p_lo[:31], phl, p_hi[:xw - 1].as_signed(), n

    def _product_sum(self, m, stage, pll_hi, pll_any, pll_all, plh, phl, phh, n3):
        """Stages 4-6: ``ab = x·M0 = pll + (plh + phl)·2^16 + phh·2^32`` (``|ab| < 2^62``) from
        the partial products (``pll`` as its high half and whether its low half is any or all
        ones), as the rounding needs it: bits 30-63 (``ab_hi``, signed 34) and
        whether bits 0-29 are any or all ones. No carry chain is longer than 16 bits out of
        a DSP block (stage 4) or 32 between registers (stage 6): the UP5K's carry step costs
        about 0.28 ns, and the 48-bit sum of two stages took 23.5 ns there. Each sum after a
        product is of a slice of it, which yosys' iCE40 DSP mapper does not absorb into an
        SB_MAC16 (``tests/test_synth.py``). Returns ``ab_hi, any_lo, all_lo, n`` of stage 6."""
        # With phl = phl_lo + (phl[16:32] − s·2^16)·2^16 (s its sign) and phh = phh[:16] +
        # phh_hi·2^16: ab = pll[:16] + (a[:16] + phl_lo)·2^16 + (a[16] + plh[16:] + b[:16])·
        # 2^32 + (b[16] + phh_hi − s)·2^48, where a = pll[16:] + plh[:16], b = phl[16:] +
        # phh[:16] (stage 4, 16-bit adds); the products sign-extended to int32's (a narrower x's
        # high bits are copies of its sign)
        nw = self.n_width
        phl, phh = _resized(m, phl, signed(32), "phl_x"), _resized(m, phh, signed(31), "phh_x")
        a4, b4, hs4 = stage("a4", 17), stage("b4", 17), stage("hs4", signed(16))
        plh4, phl4 = stage("plh4", 15), stage("phl4", 16)
        any4, all4, n4 = stage("any4", 1), stage("all4", 1), stage("n4", nw)
        m.d.sync += [a4.eq(pll_hi + plh[:16]), b4.eq(phl[16:32] + phh[:16]),
                     hs4.eq(phh[16:31].as_signed() - phl[31]), plh4.eq(plh[16:31]),
                     phl4.eq(phl[:16]), any4.eq(pll_any), all4.eq(pll_all),
                     n4.eq(n3)]
        # stage 5: bits 16-32 (l5), and bits 32-63 as two summands (x5 + y5), 16-bit adds
        l5, x5, y5 = stage("l5", 17), stage("x5", 16), stage("y5", signed(32))
        any5, all5, n5 = stage("any5", 1), stage("all5", 1), stage("n5", nw)
        m.d.sync += [l5.eq(a4[:16] + phl4), x5.eq(plh4 + a4[16]),
                     y5.eq(Cat(b4[:16], hs4 + b4[16])), any5.eq(any4), all5.eq(all4),
                     n5.eq(n4)]
        # stage 6: bits 32-63, l5's carry in; bits 16-29 reduced beside
        ab_hi6, n6 = stage("ab_hi6", signed(34)), stage("n6", nw)
        any6, all6 = stage("any6", 1), stage("all6", 1)
        m.d.sync += [ab_hi6.eq(Cat(l5[14:16], y5 + x5 + l5[16])), n6.eq(n5),
                     any6.eq(any5 | l5[:14].any()), all6.eq(all5 & l5[:14].all())]
        return ab_hi6, any6, all6, n6

    def _product_sum_shared(self, m, stage, pll_hi, pll_any, pll_all, plh, phl, phh, n4):
        """Stages 5-6 of a time-shared unit: what :meth:`_product_sum` returns, in two stages
        (``lo = pll + plh·2^16`` and ``hi = phl + phh·2^16``, then ``lo + hi·2^16``: 32-bit and
        ``x_width + 15``-bit carry chains, all from registers; ``|ab| < 2^(x_width + 30)``). The
        time-shared unit is the UP5K KWS core's, which fills the device: 55 logic cells fewer
        than three stages, and that core's clock is not bound by these chains
        (docs/boards.md)."""
        xw, nw = self.x_width, self.n_width
        # bits 16-47 of lo (its low 16 are pll's low half: the any / all flags), hi
        lo5, hi5, n5 = stage("lo5", 32), stage("hi5", signed(xw + 15)), stage("n5", nw)
        any5, all5 = stage("any5", 1), stage("all5", 1)
        m.d.sync += [lo5.eq(pll_hi + plh), hi5.eq(phl + (phh << 16)), n5.eq(n4),
                     any5.eq(pll_any), all5.eq(pll_all)]
        # bits 16 and up of ab; bits 16-29 reduced by the stage that reads them
        ab6, n6 = stage("ab6", signed(xw + 15)), stage("n6", nw)
        any6, all6 = stage("any6", 1), stage("all6", 1)
        m.d.sync += [ab6.eq(lo5 + hi5), n6.eq(n5), any6.eq(any5), all6.eq(all5)]
        return ab6[14:].as_signed(), any6 | ab6[:14].any(), all6 & ab6[:14].all(), n6

    def _clamp(self, m, stage, sh10):
        """Stages 11-12: ``y12 = clamp(sh10 + zero_point, act_min, act_max)``, int8."""
        # stage 11: the zero point added to the low 11 bits, beside the test whether the value
        # fits 10 bits (the clamp bounds are int8 and |z| < 2^8, so a value outside 10 bits
        # clamps to lo or hi whatever z is); stage 12: the clamp of the sum, its compares and
        # multiplexer only (the add is not behind them)
        y11, ovf11, neg11 = stage("y11", signed(11)), Signal(name="ovf11"), Signal(name="neg11")
        lo11, hi11 = stage("lo11", signed(9)), stage("hi11", signed(9))
        m.d.sync += [y11.eq(sh10[:10].as_signed() + self.zero_point),
                     ovf11.eq(~(sh10[9:].all() | ~sh10[9:].any())), neg11.eq(sh10[-1]),
                     lo11.eq(self.act_min), hi11.eq(self.act_max)]
        y12 = stage("y12", signed(8))
        with m.If(ovf11):
            m.d.sync += y12.eq(Mux(neg11, lo11, hi11))
        with m.Elif(y11 < lo11):
            m.d.sync += y12.eq(lo11)
        with m.Elif(y11 > hi11):
            m.d.sync += y12.eq(hi11)
        with m.Else():
            m.d.sync += y12.eq(y11)
        return y12

    def _gemmlowp(self, m, stage, ab_hi6, any6, all6, n6):
        """Stages 7-10, ``rounding="gemmlowp"``: returns ``sh10 = RoundingDivideByPOT(SRDHM)``.
        SRDHM's result is no wider than ``x`` (``M0 < 2^31``), the rounding term no wider than
        ``2^(shift_max − 1)``."""
        xw, nw, sw = self.x_width, self.n_width, self.shift_max
        ab_hi6 = _resized(m, ab_hi6, signed(xw + 1), "ab_hi")    # ab >> 30
        # stages 7-8: SRDHM: (ab + nudge) / 2^31 truncating toward zero (M0 >= 0, so the
        # INT32_MIN·INT32_MIN saturation case of gemmlowp cannot occur), with no 65-bit add:
        # nudge = 2^30 (ab >= 0) or 1 - 2^30 (ab < 0) changes the high part ab >> 31 by the
        # carry out of the low 31 bits (c), minus one for ab < 0, and rounding toward zero adds
        # one for ab < 0 when the nudged low bits are not all zero (z). With lo = ab mod 2^31:
        # c = lo >= 2^30 - neg and z = lo != 2^30 - neg, compares with constants made of bit
        # 30 and bits 0-29's all/any (stage 7); stage 8 adds the correction, -1 to 1, to
        # ab >> 31.
        neg, bit30 = ab_hi6[xw], ab_hi6[0]
        carry = bit30 | (neg & all6)
        nonzero = Mux(neg, bit30 | ~all6, ~bit30 | any6)
        hi7, inc7, n7 = stage("hi7", signed(xw)), stage("inc7", signed(3)), stage("n7", nw)
        m.d.sync += [hi7.eq(ab_hi6[1:].as_signed()), n7.eq(n6),
                     inc7.eq(carry - neg + (neg & nonzero))]
        # RoundingDivideByPOT(x, n) = (x + t) >> n (arithmetic), t = 2^(n−1) for x ≥ 0 and
        # 2^(n−1) − 1 for x < 0 (t = 0 when n = 0): gemmlowp's remainder > threshold test
        # without its wide comparison. t = (2^(n−1) − 1) + c with the carry-in c = 0 for
        # x < 0 and n > 0, else 1 (n = 0: −1 + 1), so x's sign selects a carry, not a compare
        high8, n8 = stage("high8", signed(xw)), stage("n8", nw)
        halfm8, nz8 = stage("halfm8", signed(sw + 1)), stage("nz8", 1)
        m.d.sync += [high8.eq(hi7 + inc7), n8.eq(n7), nz8.eq(n7 != 0),
                     halfm8.eq(((Const(1, sw + 1) << n7) >> 1).as_signed() - 1)]
        # stage 9: x + t; stage 10: the shift
        sum9, n9 = stage("sum9", signed(max(xw, sw + 1) + 1)), stage("n9", nw)
        m.d.sync += [sum9.eq(high8 + halfm8 + ~(high8[-1] & nz8)), n9.eq(n8)]
        sh10 = stage("sh10", sum9.shape())
        m.d.sync += sh10.eq(sum9 >> n9)
        return sh10

    def _nearest_even(self, m, stage, ab_hi6, any6, n6):
        """Stages 7-10, ``rounding="nearest-even"``: ``sh10 = round_shift_half_even(ab, 31 +
        n)`` (``sim/golden.py``). With ``ab = H·2^30 + L`` (``L`` the low 30 bits) and
        ``b = bit 31+n of ab`` (the floor quotient's parity),
        ``(ab + 2^(30+n) − 1 + b) >> (31+n) = (H + 2^n − 1 + c) >> (1+n)``,
        ``c = (L ≠ 0) | b``: an add and shift of ``max(x_width + 1, shift_max + 2) + 1`` bits
        (34 at most) instead of 64-bit ones (``|ab| < 2^(x_width + 30)``). Returns ``sh10``."""
        xw, nw, sw = self.x_width, self.n_width, self.shift_max
        hw = max(xw + 1, sw + 2)                 # H, and bits 31 + n of ab for every n
        ab_hi6 = _resized(m, ab_hi6, signed(hw), "ab_hi")
        # stage 7: H, and the rounding term 2^n − 1 + c
        h7, t7, n7 = stage("h7", signed(hw)), stage("t7", sw + 1), stage("n7", nw)
        parity = ab_hi6[1:].bit_select(n6, 1)
        pow_n = Const(1, sw + 1) << n6
        m.d.sync += [h7.eq(ab_hi6), n7.eq(n6),
                     t7.eq(Mux(any6 | parity, pow_n, pow_n - 1))]
        # stage 8: the sum; stages 9-10: the shift by 1 + n, in two steps (n's high bits, then
        # its low two)
        sum8, n8 = stage("sum8", signed(hw + 1)), stage("n8", nw)
        m.d.sync += [sum8.eq(h7 + t7), n8.eq(n7)]
        sh9, n9 = stage("sh9", signed(hw + 1)), stage("n9", 2)
        m.d.sync += [sh9.eq(sum8 >> Cat(Const(1, 1), Const(0, 1), n8[2:])), n9.eq(n8[:2])]
        sh10 = stage("sh10", signed(hw + 1))
        m.d.sync += sh10.eq(sh9 >> n9)
        return sh10
