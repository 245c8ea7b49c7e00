"""What the engine does in a layer: the descriptor's ``df`` field, shared by the compiler, the
cycle model, the exploration and the RTL.

Output, input and weight reuse are the loop orders of Zhang et al., "Optimizing FPGA-based
Accelerator Design for Deep Convolutional Neural Networks" (FPGA 2015), section 3.3; they
correspond to SCALE-Sim's ``os``, ``is`` and ``ws`` (Samajdar et al., ISPASS 2020).
"""

from amaranth.lib import enum

__all__ = ["Dataflow"]


class Dataflow(enum.IntEnum, shape=3):
    """A layer's mode on the engine (3 bits in the layer descriptor).

    ``OR`` output reuse (output stationary: sums stay in the PEs), ``IR`` input reuse (input
    stationary), ``WR`` weight reuse (weight stationary), ``WINOGRAD`` F(2×2, 3×3) (Lavin & Gray,
    CVPR 2016; its 16 GEMMs run output stationary), ``ADD`` element-wise add (TFLite's int8 add:
    no PE array, no tiles).
    """

    OR = 0
    IR = 1
    WR = 2
    WINOGRAD = 3
    ADD = 4

    @property
    def stationary(self):
        """IR and WR: a stationary operand in the PEs, column sums accumulated in the partial-sum
        buffer (the only modes that have one)."""
        return self in (Dataflow.IR, Dataflow.WR)

    @property
    def banks_on_rows(self):
        """WR: the input tile buffer is channel-banked (one bank per array row); every other
        mode banks it by column (x-banked)."""
        return self is Dataflow.WR

    @property
    def key(self):
        """The command-line and plan-file name (``"or"``, ``"ir"``, ``"wr"``, ``"winograd"``,
        ``"add"``)."""
        return self.name.lower()
