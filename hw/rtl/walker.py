"""Address generators over the input tile buffer: im2col without an im2col copy.

The x-banked layout (OR, IR, Winograd; ``docs/architecture.md``): input (n, yi, xi) of a tile
lives in bank ``(xi // S) % C`` at word ``((n·Tr_in + yi)·S + xi % S)·Wq + (xi // S) // C``. For
output columns c = 0..C−1 of one row and kernel offset (ky, kx) the C inputs
``xi = (g·C + c)·S + kx`` fall in C distinct banks (bank ``(c + q) % C``, ``q = kx // S``), so one
word per bank per cycle feeds the whole array.

A depthwise layer in the row mapping (``dw_rows``) has the channel-banked layout instead (bank
n, word ``yi·Tc_in + xi``): every bank reads the same word, one input row segment of
``walk_kw`` (kw + C − 1) columns per kernel row.
"""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.rtl.common import desc_layout

__all__ = ["Im2colWalker"]


class Im2colWalker(wiring.Component):
    """Walks k = (n, ky, kx) of one im2col column group in the x-banked tile buffer (kx up to
    ``walk_kw`` − 1: kw, or in the depthwise row mapping kw + C − 1).

    Bank b's address is ``off + rowterm + phase·Wq + q0 + (b < q1)``, where ``phase = kx % S``,
    ``q0 + (b < q1)`` is the bank-rotated word offset ``(kx // S + b) // C`` and ``rowterm``
    advances by ``fd_ky_step`` per kernel row and ``fd_chan_step`` per channel. It is kept as two
    registers, ``rowterm`` and ``col = off + phase·Wq + q0``, so that one adder with a carry-in
    sits in front of the tile buffers. In the depthwise row mapping every bank's address is
    ``off + rowterm + kx`` (``col`` counts kx, ``q1`` stays 0).

    Parameters
    ----------
    cols : int
        Array columns C (= banks read).
    addr_width : int
        Tile-buffer address bits (both ping-pong halves).
    desc : StructLayout
        The network's descriptor layout (the walker takes ``last_walk_kw``, ``last_kh``,
        ``last_sw``, ``Wq``, ``fd_ky_step``, ``fd_chan_step``, ``dw_rows``).
    kh, kw : int
        Largest kernel height and walk width (``walk_kw``) of the network.
    dw_rows : bool
        Whether a layer of the network uses the depthwise row mapping.

    Members
    -------
    reset : In(1)
        Start a walk next cycle at ``reset_rowterm`` with column offset ``reset_off``
        (``slot_base + g``); takes priority over ``step``.
    step : In(1)
        Advance to the next k.
    k : Out(16)
        Index of the current k (the walk's position, for ``k < K`` validity).
    ky, kx : Out
        Kernel offsets of the current k.
    q1 : Out
        Banks 0..q1−1 read the next word (the rotation of the bank data onto the columns).
    addr : Out(addr_width).array(cols)
        Combinational bank addresses of the current k.
    tap : Out(1)
        ``kx < kw``: the current k is a kernel tap (the depthwise row mapping's segment columns
        past kw are not).
    """

    FIELDS = ("last_walk_kw", "last_kh", "last_sw", "Wq", "fd_ky_step", "fd_chan_step",
              "dw_rows", "last_kw")

    def __init__(self, cols, addr_width, desc, kh, kw, *, dw_rows=False):
        self._cols = cols
        self._dw_rows = dw_rows
        super().__init__({
            "desc": In(desc_layout(desc, self.FIELDS)),
            "reset": In(1), "reset_rowterm": In(addr_width), "reset_off": In(addr_width),
            "step": In(1),
            "k": Out(16), "ky": Out(range(max(2, kh + 1))), "kx": Out(range(max(2, kw + 1))),
            "q1": Out(range(max(2, cols))),
            "addr": Out(addr_width).array(cols),
            "tap": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, d = self._cols, self.desc
        aw = len(self.reset_off)
        phase, q0 = Signal(8, name="phase"), Signal(8, name="q0")
        rowterm, col, off = (Signal(aw, name=n) for n in ("rowterm", "col", "off"))
        for b in range(C):
            m.d.comb += self.addr[b].eq(rowterm + col + (b < self.q1))
        # kx == last_walk_kw, ky == last_kh and phase == last_sw kept one step ahead in
        # registers: no comparison with the descriptor in front of the step's enables
        kx_last, ky_last, phase_last = (Signal(name=n) for n in ("kx_last", "ky_last",
                                                                 "phase_last"))

        with m.If(self.reset):
            m.d.sync += [self.k.eq(0), self.ky.eq(0), self.kx.eq(0), phase.eq(0), q0.eq(0),
                         self.q1.eq(0), rowterm.eq(self.reset_rowterm), off.eq(self.reset_off),
                         col.eq(self.reset_off), kx_last.eq(d.last_walk_kw == 0), self.tap.eq(1),
                         ky_last.eq(d.last_kh == 0), phase_last.eq(d.last_sw == 0)]
        with m.Elif(self.step):
            m.d.sync += self.k.eq(self.k + 1)
            with m.If(~kx_last):
                m.d.sync += [self.kx.eq(self.kx + 1), kx_last.eq(self.kx + 1 == d.last_walk_kw),
                             self.tap.eq(self.kx < d.last_kw)]
                with m.If(phase_last):
                    m.d.sync += [phase.eq(0), phase_last.eq(d.last_sw == 0)]
                    with m.If(d.dw_rows if self._dw_rows else Const(0)):
                        m.d.sync += col.eq(col + 1)
                    with m.Elif(self.q1 == C - 1):
                        m.d.sync += [self.q1.eq(0), q0.eq(q0 + 1), col.eq(off + q0 + 1)]
                    with m.Else():
                        m.d.sync += [self.q1.eq(self.q1 + 1), col.eq(off + q0)]
                with m.Else():
                    m.d.sync += [phase.eq(phase + 1), col.eq(col + d.Wq),
                                 phase_last.eq(phase + 1 == d.last_sw)]
            with m.Else():
                m.d.sync += [self.kx.eq(0), phase.eq(0), q0.eq(0), self.q1.eq(0), col.eq(off),
                             self.tap.eq(1),
                             kx_last.eq(d.last_walk_kw == 0), phase_last.eq(d.last_sw == 0)]
                with m.If(~ky_last):
                    m.d.sync += [self.ky.eq(self.ky + 1), rowterm.eq(rowterm + d.fd_ky_step),
                                 ky_last.eq(self.ky + 1 == d.last_kh)]
                with m.Else():
                    m.d.sync += [self.ky.eq(0), rowterm.eq(rowterm + d.fd_chan_step),
                                 ky_last.eq(d.last_kh == 0)]
        return m
