"""Output-stationary systolic PE array (the MAC engine).

An R×C grid of int8 multiply-accumulate processing elements computing a GEMM tile
``O[r, c] = Σ_k W[r, k] · X[k, c]`` (rows unroll output channels: kernel parallelism; columns
unroll output pixels: tile parallelism). Weights enter at the left edge and move one PE right per
cycle, inputs enter at the top and move one PE down per cycle; row r is skewed by r cycles and
column c by c cycles at the edge, so PE(r, c) sees ``W[r, k]`` and ``X[k, c]`` together at cycle
``k + r + c`` (Kung & Leiserson's systolic GEMM; SCALE-Sim's "os" dataflow).

Each PE keeps its partial sum (output stationary) and, on the beat flagged ``last``, copies the
finished sum into its result register while the next pass already streams in behind it, so passes
run back to back. The results of a pass stay readable until the same PE finishes the next pass:
for passes of L ≥ R·C + 1 beats the drain (one result per cycle, row-major, starting the cycle
after ``done``) never loses one.

Pipelining: the edge operands and control are registered once more before the skew (so the
block RAMs feeding the edge have a cycle of their own), and every PE registers its product
before accumulating (so a DSP multiply and an adder never share a cycle), once, twice or
three times (``product_registers``: the second keeps the route out of the DSP block apart from
the carry chain, the third, the DSP block's input registers, the route into it apart from the
operand multiplexer): the array's latency is R + C + ``product_registers``
(:func:`cnnforge.hw.models.timing.array_latency`).
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.models.timing import array_latency
from cnnforge.hw.rtl.common import delay, ice40_product, ice40_product_pair, product_register

__all__ = ["BeatControl", "ProcessingElement", "SystolicArray", "beat_fields", "delay_beat"]


class BeatControl(data.Struct):
    """Control bits travelling with each beat.

    ``valid``: a real beat, not a bubble. Output-stationary mode: ``first`` starts a new sum,
    ``last`` completes it. Stationary mode: ``swap`` (on a block's first beat) makes each PE
    switch to the stationary operand preloaded for the block as the beat reaches it; ``first`` /
    ``last`` mark the first / last reduction block of an output (the partial-sum buffer writes
    instead of accumulating / the output is complete); ``tail`` marks a block's last real
    beat."""
    valid: 1
    first: 1
    last: 1
    swap: 1
    tail: 1


def beat_fields(stationary):
    """The :class:`BeatControl` bits an array with or without the stationary mode uses."""
    return ("valid", "first", "last", "swap", "tail") if stationary else ("valid", "first",
                                                                           "last")


def delay_beat(m, beat, depth, name, stationary):
    """A :class:`BeatControl` through ``depth`` registers, only its :func:`beat_fields` (the
    others are 0, not registers: without the stationary mode they are constants, and chains of
    constant registers make yosys fail with "conflicting init values")."""
    out = Signal(BeatControl, name=name)
    for field in beat_fields(stationary):
        m.d.comb += out[field].eq(delay(m, beat[field], depth, f"{name}_{field}"))
    return out


class ProcessingElement(wiring.Component):
    """One int8 MAC, output stationary or with a stationary operand.

    Parameters
    ----------
    acc_width : int
        Accumulator / partial-sum width in bits (signed); derived from the longest reduction.
    w_width, x_width : int
        Operand widths (8; 12 and 11 when the program has Winograd layers, whose transformed
        weights and inputs are wider, see ``sim/winograd.py``).

    Members
    -------
    mode : In(1)
        0: output stationary (OS): ``w_in·x_in`` accumulates in the PE. 1: stationary operand
        (input or weight stationary, IS/WS): ``psum_out = psum_in + w_in·stationary``.
    w_in, x_in : In(signed(8))
        Operands from the left / upper neighbour (in mode 1, ``w_in`` is the streaming operand).
    ctl_in : In(BeatControl)
    w_out, x_out, ctl_out : Out
        The same, registered (one cycle later), to the right / lower neighbour.
    result : Out(signed(acc_width))
        Mode 0: the last finished sum; updated at the end of the cycle after the one in which a
        ``last`` beat arrives (the product is registered first).
    psum_in : In(signed(acc_width)); psum_out : Out(signed(acc_width))
        Mode 1: partial sum from above / to below, registered: ``psum_out`` two cycles after a
        beat arrived is the ``psum_in`` of the cycle after it plus the beat's product (so the
        PE below, whose beat comes one cycle later, takes it in time).
    preload, preload_data : In
        Mode 1: when ``preload`` is high, ``preload_data`` is stored as the stationary operand of
        the next block (taken over at the next ``swap`` beat).
    mul_a, mul_b : Out; mul_p : In
        Only with ``shared_multiplier``: the multiply's operands of this cycle, and their
        product registered (the cycle after), from a multiplier the array shares between two
        PEs (:func:`~cnnforge.hw.rtl.common.ice40_product_pair`).
    product_registers : int
        1; 2: the product (in the DSP block's register) registered once more in the fabric
        before the sums use it; 3: besides, the operands registered before the multiply (in
        the ``MULT18X18D``'s input registers on ECP5). ``result`` and ``psum_out`` come a cycle
        later for each register past the first (the PE below is as much later, so the partial
        sums still meet).

    With ``stationary=False`` the PE is output stationary only: ``mode``, ``preload`` and
    ``psum_in`` are ignored, ``psum_out`` stays 0 (no stationary registers for a network
    without IR/WR layers).
    """

    def __init__(self, acc_width, w_width=8, x_width=8, *, family=None,
                 shared_multiplier=False, stationary=True, product_registers=1):
        self.acc_width = acc_width
        self.product_registers = product_registers
        self.w_width, self.x_width = w_width, x_width
        self.family = family
        self.shared_multiplier = shared_multiplier
        self.stationary = stationary
        stat_width = max(w_width, x_width)
        shared = {}
        if shared_multiplier:
            shared = {"mul_a": Out(signed(w_width)), "mul_b": Out(signed(stat_width)),
                      "mul_p": In(signed(w_width + stat_width))}
        super().__init__({
            **shared,
            "mode": In(1),
            "w_in": In(signed(w_width)), "x_in": In(signed(x_width)), "ctl_in": In(BeatControl),
            "w_out": Out(signed(w_width)), "x_out": Out(signed(x_width)),
            "ctl_out": Out(BeatControl),
            "result": Out(signed(acc_width)),
            "psum_in": In(signed(acc_width)), "psum_out": Out(signed(acc_width)),
            "preload": In(1), "preload_data": In(signed(stat_width)),
        })

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(self.acc_width))
        stat_width = max(self.w_width, self.x_width)
        stat, stat_next = Signal(signed(stat_width)), Signal(signed(stat_width))
        operand = Signal(signed(stat_width))
        # the product is registered (the multiplier alone in its cycle), with the control bits
        # of its beat; the sums use it product_registers cycles after the operands arrived
        product = Signal(signed(self.w_width + stat_width))
        ctl = Signal(BeatControl)
        swapping = self.ctl_in.valid & self.ctl_in.swap
        # (mode is undriven without the stationary mode; written as `mode == 0` or 1, yosys maps
        # the ULX3S 25F digits core into 4,533 LUT4 at 128.2 MHz, as the constant 1 alone into
        # 4,610 at 110.2)
        os_mode = (self.mode == 0) | Const(0 if self.stationary else 1)
        with m.If(os_mode):
            m.d.comb += operand.eq(self.x_in)
        with m.Elif(swapping):
            m.d.comb += operand.eq(stat_next)
        with m.Else():
            m.d.comb += operand.eq(stat)
        # product_registers 3: the operands into the DSP block's input registers first
        inputs = int(self.product_registers > 2)
        if self.shared_multiplier:
            m.d.comb += [self.mul_a.eq(delay(m, self.w_in, inputs, "mul_a")),
                         self.mul_b.eq(delay(m, operand, inputs, "mul_b")),
                         product.eq(self.mul_p)]
        else:
            product_register(m, self.family, "mult", self.w_in, operand, product, inputs)
        # (output stationary only: the stationary bits are not registered, see delay_beat)
        for field in beat_fields(self.stationary):
            m.d.sync += [ctl[field].eq(self.ctl_in[field]),
                         self.ctl_out[field].eq(self.ctl_in[field])]
        if self.product_registers > 1:          # the beat follows its product
            ctl = delay_beat(m, ctl, self.product_registers - 1, "ctl_q", self.stationary)
        if self.product_registers > 1 + inputs:         # the DSP block's product, once more
            product = delay(m, product, self.product_registers - 1 - inputs, "product_q")
        m.d.sync += [self.w_out.eq(self.w_in), self.x_out.eq(self.x_in)]
        if self.stationary:
            m.d.sync += self.psum_out.eq(self.psum_in + product)
            with m.If(swapping):
                m.d.sync += stat.eq(stat_next)
            with m.If(self.preload):
                m.d.sync += stat_next.eq(self.preload_data)
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(product + acc)
        with m.If(ctl.valid & os_mode):
            with m.If(ctl.first):
                m.d.sync += acc.eq(product)
                m.d.comb += total.eq(product)
            with m.Else():
                m.d.sync += acc.eq(total)
            with m.If(ctl.last):
                m.d.sync += self.result.eq(total)
        return m


class SystolicArray(wiring.Component):
    """R×C systolic array with edge skew, output stationary (OS) or stationary-operand (IS/WS).

    Parameters
    ----------
    rows, cols : int
        R and C, at least 1.
    acc_width, w_width, x_width : int
        See :class:`ProcessingElement`.
    family : ``"ice40"``, ``"ecp5"`` or None
        The FPGA family synthesized for (None: simulation, plain multiplies). Each PE's product
        in a DSP block's register (``MULT18X18D``, ``SB_MAC16``); on iCE40 with 8-bit operands
        two PEs' products in one ``SB_MAC16`` in 8×8 mode (:attr:`dsp_blocks`). Same values,
        same cycles.
    row_inputs : bool
        Add the row-broadcast inputs (``x_rows``, ``x_from_rows``) of the depthwise row mapping.
    stationary : bool
        Build the stationary-operand mode (IR/WR); without it the array is output stationary
        only (``mode``, the preloads and ``psums`` unused).
    product_registers : int
        Registers after each PE's multiply (see :class:`ProcessingElement`).

    Members
    -------
    mode : In(1)
        0: output stationary; 1: stationary operand (see :class:`ProcessingElement`).
    w_edge : In(signed(8)).array(rows)
        Per row, one streaming operand per cycle, all rows in the same cycle for the same beat
        (the array skews): ``W[r, k]`` in OS mode; in mode 1 the streamed operand of row r
        (a weight for IS, an input for WS).
    x_edge : In(signed(8)).array(cols)
        OS mode: ``X[k, c]`` for every column, same cycle as the weights of the same k.
    x_rows : In(signed(8)).array(rows); x_from_rows : In(1)
        With ``row_inputs``: while ``x_from_rows`` is high, every PE of row r takes its input
        from ``x_rows[r]`` (skewed by r like the weights, not by the column) instead of from
        above, so that PE (r, c) multiplies the weight of beat k by the value ``x_rows[r]`` had
        at beat k + c (``cnnforge.hw.compiler.program.dw_rows``).
    ctl_edge : In(BeatControl)
    preload_en : In(1); preload_row : In(range(rows)); preload_data : In(signed(8)).array(cols)
        Mode 1: store ``preload_data[c]`` as row ``preload_row``'s stationary operands for the
        next block. A row may be preloaded once the previous block's ``swap`` beat has passed
        it (C cycles after that beat entered the row) and must be preloaded before the next
        block's ``swap`` beat enters it.
    done : Out(1)
        OS mode: pulses ``latency`` cycles after a ``last`` beat entered the edge: every PE's
        ``result`` now holds the pass that ended, and keeps it for R·C more cycles if passes last
        ≥ R·C + 1 beats.
    results : Out(signed(acc_width)).array(rows, cols)
    psums : Out(signed(acc_width)).array(cols); psum_ctl : Out(BeatControl)
        Mode 1: the column sums of one beat, all columns aligned (deskewed), with the beat's
        control bits, ``latency`` cycles after the beat entered the edge.
    latency : int
        Cycles from a beat at the edge to ``done`` / ``psums`` (:func:`array_latency`,
        R + C + ``product_registers``).
    """

    def __init__(self, rows, cols, acc_width, w_width=8, x_width=8, *, family=None,
                 row_inputs=False, stationary=True, product_registers=1):
        if rows < 1 or cols < 1:
            raise ValueError(f"array must be at least 1x1, got {rows}x{cols}")
        self.product_registers = product_registers
        self.rows, self.cols, self.acc_width = rows, cols, acc_width
        self.w_width, self.x_width = w_width, x_width
        self.family = family
        self.row_inputs = row_inputs
        self.stationary = stationary
        rows_in = {}
        if row_inputs:
            rows_in = {"x_rows": In(signed(x_width)).array(rows), "x_from_rows": In(1)}
        super().__init__({
            **rows_in,
            "mode": In(1),
            "w_edge": In(signed(w_width)).array(rows),
            "x_edge": In(signed(x_width)).array(cols),
            "ctl_edge": In(BeatControl),
            "preload_en": In(1), "preload_row": In(range(max(2, rows))),
            "preload_data": In(signed(max(w_width, x_width))).array(cols),
            "done": Out(1),
            "results": Out(signed(acc_width)).array(rows, cols),
            "psums": Out(signed(acc_width)).array(cols),
            "psum_ctl": Out(BeatControl),
        })

    @property
    def latency(self):
        return array_latency(self.rows, self.cols, self.product_registers)

    @property
    def paired(self):
        """Whether two PEs share each DSP block: iCE40 with 8-bit operands (an ``SB_MAC16`` in
        8×8 mode computes two products)."""
        return self.family == "ice40" and self.w_width == self.x_width == 8

    @property
    def dsp_blocks(self):
        """DSP blocks of the PEs' multiplies."""
        pes = self.rows * self.cols
        return (pes + 1) // 2 if self.paired else pes

    @staticmethod
    def _pair_multipliers(m, pes):
        """The PEs' products two at a time in one ``SB_MAC16`` (row-major neighbours); an odd
        one out multiplies alone, in a block's 16×16 mode."""
        for i in range(0, len(pes) - 1, 2):
            a, b = pes[i], pes[i + 1]
            ice40_product_pair(m, f"mac_pair{i // 2}", a.mul_a, a.mul_b, a.mul_p,
                               b.mul_a, b.mul_b, b.mul_p)
        if len(pes) % 2:
            ice40_product(m, "mac_single", pes[-1].mul_a, pes[-1].mul_b, pes[-1].mul_p)

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        preload_en, preload_row = Signal(), Signal.like(self.preload_row)
        preload_data = [Signal.like(self.preload_data[c], name=f"preload_data{c}")
                        for c in range(C)]
        if self.stationary:
            m.d.sync += [preload_en.eq(self.preload_en), preload_row.eq(self.preload_row)]
            m.d.sync += [preload_data[c].eq(self.preload_data[c]) for c in range(C)]
        pes = [[ProcessingElement(self.acc_width, self.w_width, self.x_width,
                                  family=self.family, shared_multiplier=self.paired,
                                  stationary=self.stationary,
                                  product_registers=self.product_registers)
                for _ in range(C)]
               for _ in range(R)]
        if self.paired:
            self._pair_multipliers(m, [pe for row in pes for pe in row])
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pe = pes[r][c]
                if self.stationary:
                    m.d.comb += [pe.mode.eq(self.mode),
                                 pe.preload.eq(preload_en & (preload_row == r)),
                                 pe.preload_data.eq(preload_data[c])]

        # the edge register (the first stage of every skew chain) and the preload, delayed as
        # much so that preloads keep their place relative to the beats
        for r in range(R):
            m.d.comb += [pes[r][0].w_in.eq(delay(m, self.w_edge[r], r + 1, f"w_skew{r}")),
                         pes[r][0].ctl_in.eq(delay_beat(m, self.ctl_edge, r + 1, f"ctl_skew{r}",
                                                        self.stationary))]
            for c in range(1, C):
                m.d.comb += [pes[r][c].w_in.eq(pes[r][c - 1].w_out),
                             pes[r][c].ctl_in.eq(pes[r][c - 1].ctl_out)]
        row_x = []
        if self.row_inputs:
            from_rows = Signal()
            m.d.sync += from_rows.eq(self.x_from_rows)
            row_x = [delay(m, self.x_rows[r], r + 1, f"xr_skew{r}") for r in range(R)]
        for c in range(C):
            m.d.comb += pes[0][c].psum_in.eq(0)
            for r in range(R):
                above = (delay(m, self.x_edge[c], c + 1, f"x_skew{c}") if r == 0
                         else pes[r - 1][c].x_out)
                if row_x:
                    above = Mux(from_rows, row_x[r], above)
                m.d.comb += pes[r][c].x_in.eq(above)
                if r:
                    m.d.comb += pes[r][c].psum_in.eq(pes[r - 1][c].psum_out)
            # deskew the bottom row: column c is c cycles ahead of column C-1
            if self.stationary:
                m.d.comb += self.psums[c].eq(delay(m, pes[R - 1][c].psum_out, C - 1 - c,
                                                   f"deskew{c}"))
        for r in range(R):
            for c in range(C):
                m.d.comb += self.results[r][c].eq(pes[r][c].result)
        # the corner's control bits, aligned with its result / partial sum (product registers)
        corner = delay_beat(m, pes[R - 1][C - 1].ctl_out, self.product_registers, "corner",
                            self.stationary)
        m.d.comb += [self.done.eq(corner.valid & corner.last & (self.mode == 0)),
                     self.psum_ctl.eq(corner)]
        return m
