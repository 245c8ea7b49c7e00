"""The FPGAs the flow targets: one registry that answers every family question (DSP and
block-RAM kinds, where the tile buffers go, default arrays), so no module tests family strings.
Totals from the vendors' data sheets (Lattice FPGA-DS-02008 iCE40 UltraPlus, FPGA-DS-02012 ECP5).
"""

from dataclasses import dataclass

from cnnforge.hw.compiler.program import AcceleratorConfig

__all__ = ["DEVICES", "Device"]


@dataclass(frozen=True)
class Device:
    """An FPGA the flow targets.

    Members
    -------
    key : str
        Command-line name (``up5k``, ``lfe5u-25f``, ``lfe5u-85f``).
    family : str
        ``ice40`` or ``ecp5``.
    part : str
        Vendor part name.
    nextpnr_args : tuple of str
        Device and package selection for nextpnr.
    luts, dsps, bram, spram : int
        Totals: logic cells (iCE40: LUT4 + FF each) or LUT4s (ECP5), SB_MAC16 / MULT18X18D,
        EBR (4 Kbit iCE40, 18 Kbit ECP5), SPRAM (256 Kbit, iCE40 UP only).
    target_mhz : float
        Core clock target when none is requested.
    rows, cols : int
        Default PE array for this device (what its DSP blocks hold; docs/boards.md).
    algorithm : str
        Default ``AcceleratorConfig.algorithm`` (``"direct"`` on the UP5K: no Winograd unit).
    """

    key: str
    family: str
    part: str
    nextpnr_args: tuple
    luts: int
    dsps: int
    bram: int
    spram: int
    target_mhz: float
    rows: int
    cols: int
    algorithm: str = "auto"

    @property
    def int8_products_per_dsp(self):
        """int8 × int8 products one DSP block can make per cycle: an SB_MAC16 splits into two
        8×8 multipliers, a MULT18X18D's slice into two 9×9 (Lattice FPGA-TN-02007 iCE40 DSP,
        FPGA-TN-02205 ECP5 sysDSP)."""
        return 2

    @property
    def peak_int8_macs(self):
        """int8 MACs per cycle the device's DSP blocks could make (``dsps`` ×
        :attr:`int8_products_per_dsp`)."""
        return self.dsps * self.int8_products_per_dsp

    def pe_dsps(self, rows, cols):
        """DSP blocks a ``rows`` × ``cols`` PE array takes: two PEs per ``SB_MAC16`` (8×8 mode)
        on the iCE40, one per ``MULT18X18D`` on the ECP5."""
        return -(-rows * cols // (2 if self.family == "ice40" else 1))

    def ppu_interval(self, rows, cols):
        """``AcceleratorConfig.ppu_interval`` for a ``rows`` × ``cols`` array on this device: 1
        where the array leaves the requantizer its four DSP blocks, else 2 (two blocks,
        time-shared: a result every other cycle). The UP5K's 4×3 array takes 6 of its 8."""
        return 1 if self.pe_dsps(rows, cols) + 4 <= self.dsps else 2

    def config(self, rows=None, cols=None, **kwargs):
        """The :class:`~cnnforge.hw.compiler.program.AcceleratorConfig` ``cnnforge synth``
        builds for this device: its default array unless ``rows`` / ``cols`` are given, its
        algorithm, input tile buffer kind, post-processor interval and loader lanes, and narrow
        passes except in the time-shared design (the UP5K's 4×3: 99 % of the device);
        ``kwargs`` (any other field) passed on (the array a network gets:
        :func:`~cnnforge.hw.compiler.memory.device_config`).

        Raises
        ------
        ConfigError
            As :class:`~cnnforge.hw.compiler.program.AcceleratorConfig`.
        """
        rows = self.rows if rows is None else rows
        cols = self.cols if cols is None else cols
        interval = self.ppu_interval(rows, cols)
        return AcceleratorConfig(rows, cols, **{
            "algorithm": self.algorithm, "lutram_buffers": self.lutram_buffers,
            "ppu_interval": interval, "loader_lanes": self.loader_lanes,
            "product_registers": self.product_registers,
            "weight_bank_words": self.weight_bank_words,
            "narrow_passes": interval == 1, **kwargs})

    @property
    def loader_lanes(self):
        """``AcceleratorConfig.loader_lanes`` for this device: two on ECP5 (the feature map's
        second read port feeds the loader's second lane); one on the iCE40, whose feature
        maps may go to single-port SPRAM and whose LUTs the UP5K's array needs."""
        return 2 if self.family == "ecp5" else 1

    @property
    def product_registers(self):
        """``AcceleratorConfig.product_registers`` for this device: three on ECP5, where the
        route from a ``MULT18X18D``'s output register to the accumulator's carry chain was the
        LFE5U-85F digits core's critical path (8.6 ns), and then the PE's operand multiplexer
        into the block's B input, with its 3.49 ns setup without the input registers, VWW's
        (9.6-10.2 ns); one on the iCE40, whose ``SB_MAC16`` pairs sit beside the fabric and
        whose every flip-flop takes a logic cell the UP5K's arrays need."""
        return 3 if self.family == "ecp5" else 1

    @property
    def weight_bank_words(self):
        """``AcceleratorConfig.weight_bank_words`` for this device: on ECP5 banks of 2048 words
        (a ``DP16KD``'s depth at 9 bits a word, Lattice TN1264: each bank is its blocks side by
        side, read without a multiplexer); 0 on the iCE40 (one block RAM ROM read in a cycle,
        or SPRAM)."""
        return 2048 if self.family == "ecp5" else 0

    @property
    def fm_bank_words(self):
        """``AcceleratorConfig.fm_bank_words`` a network without fused max-pools or adds gets
        on this device (:func:`~cnnforge.hw.compiler.memory.device_config`): 2048 on ECP5, as
        :attr:`weight_bank_words`; 0 on the iCE40."""
        return self.weight_bank_words

    @property
    def lutram_buffers(self):
        """``AcceleratorConfig.lutram_buffers`` for this device: on ECP5 the input tile buffers
        are distributed RAM (iCE40 keeps them in block RAM, read synchronously)."""
        return self.family == "ecp5"


DEVICES = {
    "up5k": Device("up5k", "ice40", "iCE40UP5K-SG48", ("--up5k", "--package", "sg48"),
                   luts=5280, dsps=8, bram=30, spram=4, target_mhz=48.0, rows=4, cols=3,
                   algorithm="direct"),
    "lfe5u-25f": Device("lfe5u-25f", "ecp5", "LFE5U-25F-6BG381C",
                        ("--25k", "--package", "CABGA381", "--speed", "6"),
                        luts=24288, dsps=28, bram=56, spram=0, target_mhz=100.0,
                        rows=4, cols=4),
    "lfe5u-85f": Device("lfe5u-85f", "ecp5", "LFE5U-85F-6BG381C",
                        ("--85k", "--package", "CABGA381", "--speed", "6"),
                        luts=83640, dsps=156, bram=208, spram=0, target_mhz=100.0,
                        rows=8, cols=8),
}
