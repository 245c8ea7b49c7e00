"""Post-processing unit: bias, gemmlowp requantization, activation clamp, max-pool, write-back.

Takes one finished accumulator per cycle (no back-pressure, fixed latency) and writes the int8
result into the feature-map memory. The arithmetic is the golden model's
:func:`cnnforge.sim.golden.requantize` bit for bit:

``y = clamp(z_out + RoundingDivideByPOT(SRDHM(acc + bias[m], M0[m]), n[m]), lo, hi)``

Max-pooling (kernel = stride, a power of two) is fused as a read-modify-write on the destination
feature map: the first contribution to a window (its top-left pixel, which the controllers always
produce first for each channel) is written, later ones write ``max(old, y)``. The read port used
for it is transparent to the write port, so back-to-back updates of the same window see each
other.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ChannelParams", "PostProcessor"]


class ChannelParams(data.Struct):
    """Per output channel constants in the parameter ROM."""
    bias: signed(32)        # int32 bias, input zero point folded in
    multiplier: unsigned(31)  # M0 in [2^30, 2^31), or 0
    shift: unsigned(5)      # right shift n in [0, 31]


class PostProcessor(wiring.Component):
    """Bias + requantize + clamp + fused max-pool, one result per cycle.

    Parameters
    ----------
    acc_width : int
        Width of the incoming accumulators (signed).
    params : list of dict
        Parameter ROM contents, one ``{"bias", "multiplier", "shift"}`` per output channel of
        the whole network (a layer addresses its channels from its ``ch_base``).
    addr_width : int
        Feature-map address width.

    Members
    -------
    valid, acc, channel, addr, first : In
        One beat: accumulator, global channel index (parameter ROM address), destination
        address, and whether it is the first contribution to its pooling window (always 1
        without pooling). No back-pressure.
    zero_point, act_min, act_max : In(signed(9))
        Layer constants, held while the layer runs.
    rd_addr : Out, rd_data : In(signed(8))
        Read port on the feature map, transparent to the write port, one cycle latency.
    wr_addr, wr_data, wr_en : Out
        Write port on the feature map.
    busy : Out(1)
        A beat is still in the pipeline.
    latency : int
        Cycles from a beat at the input to its write (5).
    """

    latency = 5

    def __init__(self, acc_width, params, addr_width):
        self.acc_width = acc_width
        self.params = params
        super().__init__({
            "valid": In(1), "acc": In(signed(acc_width)),
            "channel": In(range(max(2, len(params)))),
            "addr": In(addr_width), "first": In(1),
            "zero_point": In(signed(9)), "act_min": In(signed(9)), "act_max": In(signed(9)),
            "rd_addr": Out(addr_width), "rd_data": In(signed(8)),
            "wr_addr": Out(addr_width), "wr_data": Out(signed(8)), "wr_en": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = memory.Memory(shape=ChannelParams, depth=max(2, len(self.params)),
                                               init=self.params)
        port = rom.read_port()
        m.d.comb += port.addr.eq(self.channel)

        # stage 1: parameters arrive; add the bias
        v1, acc1, addr1, first1 = (Signal(), Signal(signed(self.acc_width)),
                                   Signal.like(self.addr), Signal())
        m.d.sync += [v1.eq(self.valid), acc1.eq(self.acc), addr1.eq(self.addr),
                     first1.eq(self.first)]
        # stage 2: x = acc + bias (the compiler guarantees int32 range)
        v2, x2, m02, n2, addr2, first2 = (Signal(), Signal(signed(32)), Signal(unsigned(31)),
                                          Signal(5), Signal.like(self.addr), Signal())
        m.d.sync += [v2.eq(v1), x2.eq(acc1 + port.data.bias), m02.eq(port.data.multiplier),
                     n2.eq(port.data.shift), addr2.eq(addr1), first2.eq(first1)]
        # stage 3: 64-bit product x·M0
        v3, ab3, n3, addr3, first3 = (Signal(), Signal(signed(64)), Signal(5),
                                      Signal.like(self.addr), Signal())
        m.d.sync += [v3.eq(v2), ab3.eq(x2 * m02), n3.eq(n2), addr3.eq(addr2), first3.eq(first2)]
        # stage 4: SRDHM: (ab + nudge) / 2^31 truncating toward zero (M0 >= 0, so the
        # INT32_MIN·INT32_MIN saturation case of gemmlowp cannot occur)
        nudged = Signal(signed(65))
        m.d.comb += nudged.eq(ab3 + Mux(ab3 >= 0, 1 << 30, 1 - (1 << 30)))
        toward_zero = Signal(signed(65))
        m.d.comb += toward_zero.eq(nudged + Mux(nudged < 0, (1 << 31) - 1, 0))
        v4, high4, n4, addr4, first4 = (Signal(), Signal(signed(32)), Signal(5),
                                        Signal.like(self.addr), Signal())
        m.d.sync += [v4.eq(v3), high4.eq(toward_zero >> 31), n4.eq(n3), addr4.eq(addr3),
                     first4.eq(first3)]
        # stage 5 (combinational part): RoundingDivideByPOT, zero point, clamp; issue the
        # pooling read
        mask = Signal(32)
        m.d.comb += mask.eq((Const(1, 33) << n4) - 1)
        remainder = Signal(32)
        m.d.comb += remainder.eq(high4.as_unsigned() & mask)
        threshold = Signal(33)
        m.d.comb += threshold.eq((mask >> 1) + (high4 < 0))
        rounded = Signal(signed(33))
        m.d.comb += rounded.eq((high4 >> n4) + (remainder > threshold))
        shifted = Signal(signed(34))
        m.d.comb += shifted.eq(rounded + self.zero_point)
        clamped = Signal(signed(9))
        with m.If(shifted < self.act_min):
            m.d.comb += clamped.eq(self.act_min)
        with m.Elif(shifted > self.act_max):
            m.d.comb += clamped.eq(self.act_max)
        with m.Else():
            m.d.comb += clamped.eq(shifted)
        v5, y5, addr5, first5 = Signal(), Signal(signed(8)), Signal.like(self.addr), Signal()
        m.d.sync += [v5.eq(v4), y5.eq(clamped), addr5.eq(addr4), first5.eq(first4)]
        m.d.comb += self.rd_addr.eq(addr4)
        # stage 6: write (max with the window's value so far)
        m.d.comb += [
            self.wr_en.eq(v5),
            self.wr_addr.eq(addr5),
            self.wr_data.eq(Mux(first5 | (y5 > self.rd_data), y5, self.rd_data)),
            self.busy.eq(self.valid | v1 | v2 | v3 | v4 | v5),
        ]
        return m
