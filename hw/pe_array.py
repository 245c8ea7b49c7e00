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
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BeatControl", "ProcessingElement", "SystolicArray"]


class BeatControl(data.Struct):
    """Control bits travelling with each beat: ``valid`` (a real beat, not a bubble), ``first``
    (start a new sum) and ``last`` (the sum is complete after this beat)."""
    valid: 1
    first: 1
    last: 1


class ProcessingElement(wiring.Component):
    """One int8 MAC with an output-stationary accumulator.

    Parameters
    ----------
    acc_width : int
        Accumulator width in bits (signed); the compiler derives it from the longest reduction.

    Members
    -------
    w_in, x_in : In(signed(8))
        Operands from the left / upper neighbour.
    ctl_in : In(BeatControl)
    w_out, x_out, ctl_out : Out
        The same, registered (one cycle later), to the right / lower neighbour.
    result : Out(signed(acc_width))
        The last finished sum; updated at the end of the cycle in which a ``last`` beat arrives.
    """

    def __init__(self, acc_width):
        self.acc_width = acc_width
        super().__init__({
            "w_in": In(signed(8)), "x_in": In(signed(8)), "ctl_in": In(BeatControl),
            "w_out": Out(signed(8)), "x_out": Out(signed(8)), "ctl_out": Out(BeatControl),
            "result": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(self.acc_width))
        product = Signal(signed(16))
        m.d.comb += product.eq(self.w_in * self.x_in)
        m.d.sync += [self.w_out.eq(self.w_in), self.x_out.eq(self.x_in),
                     self.ctl_out.eq(self.ctl_in)]
        total = Signal(signed(self.acc_width))
        m.d.comb += total.eq(product + acc)
        with m.If(self.ctl_in.valid):
            with m.If(self.ctl_in.first):
                m.d.sync += acc.eq(product)
                m.d.comb += total.eq(product)
            with m.Else():
                m.d.sync += acc.eq(total)
            with m.If(self.ctl_in.last):
                m.d.sync += self.result.eq(total)
        return m


class SystolicArray(wiring.Component):
    """R×C output-stationary systolic array with edge skew.

    Parameters
    ----------
    rows, cols : int
        R and C, at least 1.
    acc_width : int

    Members
    -------
    w_edge : In(signed(8)).array(rows)
        ``W[r, k]`` for every row, all rows for the same k in the same cycle (the array skews).
    x_edge : In(signed(8)).array(cols)
        ``X[k, c]`` for every column, same cycle as the weights of the same k.
    ctl_edge : In(BeatControl)
    done : Out(1)
        Pulses one cycle after PE(R−1, C−1) took a ``last`` beat: every PE's ``result`` now holds
        the pass that ended, and keeps it for R·C more cycles if passes last ≥ R·C + 1 beats.
    results : Out(signed(acc_width)).array(rows, cols)
    latency : int
        Cycles from a ``last`` beat at the edge to ``done`` (R + C − 1).
    """

    def __init__(self, rows, cols, acc_width):
        if rows < 1 or cols < 1:
            raise ValueError(f"array must be at least 1x1, got {rows}x{cols}")
        self.rows, self.cols, self.acc_width = rows, cols, acc_width
        super().__init__({
            "w_edge": In(signed(8)).array(rows),
            "x_edge": In(signed(8)).array(cols),
            "ctl_edge": In(BeatControl),
            "done": Out(1),
            "results": Out(signed(acc_width)).array(rows, cols),
        })

    @property
    def latency(self):
        return self.rows + self.cols - 1

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        pes = [[ProcessingElement(self.acc_width) for _ in range(C)] for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]

        def skew(value, depth, name):
            """``value`` delayed by ``depth`` cycles through a register chain."""
            for i in range(depth):
                reg = Signal.like(value, name=f"{name}_d{i}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        for r in range(R):
            m.d.comb += [pes[r][0].w_in.eq(skew(self.w_edge[r], r, f"w_skew{r}")),
                         pes[r][0].ctl_in.eq(skew(self.ctl_edge, r, f"ctl_skew{r}"))]
            for c in range(1, C):
                m.d.comb += [pes[r][c].w_in.eq(pes[r][c - 1].w_out),
                             pes[r][c].ctl_in.eq(pes[r][c - 1].ctl_out)]
        for c in range(C):
            m.d.comb += pes[0][c].x_in.eq(skew(self.x_edge[c], c, f"x_skew{c}"))
            for r in range(1, R):
                m.d.comb += pes[r][c].x_in.eq(pes[r - 1][c].x_out)
        for r in range(R):
            for c in range(C):
                m.d.comb += self.results[r][c].eq(pes[r][c].result)
        corner = pes[R - 1][C - 1].ctl_out
        m.d.comb += self.done.eq(corner.valid & corner.last)
        return m
