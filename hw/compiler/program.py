"""Compiler: from a quantized network and an accelerator configuration to a hardware program.

The program holds everything the hardware is elaborated from: one descriptor per engine layer
(a Conv2d or Linear with its fused activation and max-pool), the weight ROM (one word of R int8
weights per reduction step k), the per-channel parameter ROM (bias, M0, shift), the feature-map
allocation (two regions that swap between layers) and every derived width and depth.

Tiling follows Zhang et al., "Optimizing FPGA-based Accelerator Design for Deep Convolutional
Neural Networks", FPGA 2015: an output tile of Tm channels × Tr rows × Tc columns is computed from
an input tile of Tn channels × ((Tr−1)·S + K) rows × ((Tc−1)·S + K) columns. The output-reuse
(OR) controller keeps Tn = N (the whole reduction stays in the PEs, output stationary) and
Tm = M (each input tile is reused by every output channel); the planner picks Tr and Tc.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from cnnforge.hw.frontend.network import NetworkError
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import drained_columns, layer_cycles, or_pass_beats, tile_order
from cnnforge.hw.models.timing import (array_latency, pass_fifo_depth, read_port_latency,
                                       tile_read_latency)
from cnnforge.sim.golden import add_rescale
from cnnforge.sim.winograd import weight_transform, widths as winograd_widths

__all__ = ["AcceleratorConfig", "LayerPlan", "Program", "compile_network", "ConfigError",
           "reduction_width",
           "weight_image", "SPRAM_SLOT_VALUES", "fm_bankable",
           "load_plan", "DATAFLOWS"]


#: The dataflows a direct layer may take (``--dataflow``, a plan's ``"dataflow"``): the keys
#: of :data:`DIRECT`.
DATAFLOWS = ("or", "ir", "wr")
#: The :class:`~cnnforge.hw.models.dataflow.Dataflow` of each of :data:`DATAFLOWS`.
DIRECT = (Dataflow.OR, Dataflow.IR, Dataflow.WR)
ALGORITHMS = ("direct", "winograd")


class ConfigError(ValueError):
    """An accelerator configuration that cannot work (one-line message saying why)."""


#: int8 values one SPRAM block (``SB_SPRAM256KA``, 16K × 16 bits) holds: a feature-map slot's
#: largest size with SPRAM feature maps.
SPRAM_SLOT_VALUES = 32768


def reduction_width(op, K):
    """The signed accumulator width a direct layer needs: its largest ``|Σ x·w|`` over int8
    inputs (``|x| ≤ 128``) is at most 128 times the largest ``Σ|w|`` of one output channel's
    weights (the ROM's padding entries are zeros, and a partial sum of IR/WR passes is a sum
    over some of the same products), and at most ``K·128·127`` (``K`` the plan's reduction
    length); never less than one product's. From the weights, the KWS model's accumulators
    take 20 bits where ``K`` alone gives 23 (its average pool's 175-tap window of ones)."""
    bound = K * 128 * 127
    if op.weight is not None and op.weight.size:
        per_channel = np.abs(op.weight.astype(np.int64)).reshape(len(op.weight), -1).sum(axis=1)
        bound = min(bound, 128 * int(per_channel.max()))
    return max(bound, 128 * 127).bit_length() + 1


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class AcceleratorConfig:
    """Every parameter of an accelerator instance.

    Parameters
    ----------
    rows, cols : int
        PE array size R × C (rows unroll output channels, columns output pixels).
    input_buffer_bytes : int
        Capacity of one ping-pong half of the input tile buffer, in int8 values (all C banks
        together); the planner's tiles must fit.
    dataflow : str
        Default dataflow of every layer: ``"or"`` (output reuse, output stationary), ``"ir"``
        (input reuse, input stationary), ``"wr"`` (weight reuse, weight stationary) or
        ``"auto"`` (the fastest by the performance model, per layer).
    algorithm : str
        ``"auto"`` (each Conv2d's own ``algorithm``), ``"direct"`` (every layer direct) or
        ``"winograd"`` (Winograd F(2×2, 3×3) on every 3×3 stride-1 layer, direct elsewhere).
    lutram_buffers : bool
        The input tile buffers are read asynchronously behind a registered address, for
        distributed (LUT) RAM: the address arithmetic is then before the register instead of
        in front of the RAM (ECP5, where yosys puts these buffers in LUT RAM anyway). Off: a
        synchronous read with a registered output, which iCE40 block RAM needs. Same values,
        same cycles either way.
    spram_feature_maps : bool
        Feature maps in the iCE40 UltraPlus's single-port SPRAM (``SB_SPRAM256KA``) instead of
        block RAM: every feature-map slot in a block of its own (two int8 values a 16-bit word,
        up to 32,768 values a slot; the slots' size rounded up to a power of two), so the
        loader's reads and the post-processor's writes of a layer, which use different slots,
        never meet on one port. The schedule does not change; a fused pooling layer (which
        reads and writes its output slot in one cycle) is refused.
    spram_weights : bool
        The weights in SPRAM instead of a block-RAM ROM: SPRAM is not initialized by the
        bitstream, so the accelerator takes them as a byte stream (``i_weights``,
        :func:`weight_image`) before the first image.
    ppu_interval : int
        Cycles between the post-processor's input beats: 1, or 2 for a requantizer whose four
        16×16 partial products are time-shared over two DSP blocks instead of four (the iCE40
        UltraPlus's eight ``SB_MAC16`` then leave six, twelve int8 products, to the PE array).
        With 2 the output-reuse drain hands over a result every other cycle and a pass is at
        least 2·R·C + 1 beats; every layer must run output reuse (direct): the other drains
        and the element-wise add feed the post-processor every cycle.
    loader_lanes : int
        Values the tile loader moves from the feature map into the input tile buffer per
        cycle: 1, or 2 through the feature map's second read port (which only a fused max-pool
        uses: such layers, and arrays whose tile of a layer has a single bank, load one). Two
        lanes take x and x + stride of a tile row (x-banked) or channels n and n + 1
        (channel-banked, on an even number of rows): two different banks
        (:func:`loader_pairing`). Not with ``spram_feature_maps`` (single-port blocks).
    weight_bank_words : int
        0: the weight ROM is one memory, read synchronously. N (a power of two): the ROM is cut
        into banks of N words, the read address, each bank's read data and the bank multiplexer
        registered (:class:`~cnnforge.hw.rtl.banked.BankedMemory`: ECP5, where a ROM of many
        ``DP16KD`` blocks otherwise has their clock-to-out and its multiplexer in one cycle);
        the weight read and the tile buffer's read then take five cycles
        (:func:`~cnnforge.hw.models.timing.tile_read_latency`), and the post-processor's
        parameter ROM is banked the same way (three cycles more,
        :func:`~cnnforge.hw.models.timing.ppu_latency`). Not with ``spram_weights``.
    fm_bank_words : int
        0: the feature map is one memory. N (a power of two): banks of N values, the read
        address and each bank's read data registered before the bank multiplexer (ECP5: a
        large map's many ``DP16KD`` blocks otherwise have their clock-to-out and the
        multiplexer in the read's cycle); the tile loader's read then takes five cycles
        (:func:`~cnnforge.hw.models.timing.fm_read_latency`). Not with a fused max-pool or an
        element-wise add (their reads take one cycle), nor ``spram_feature_maps``.
    product_registers : int
        Registers around each PE's multiply: 1; 2: the product leaves the DSP block's output
        register into a fabric register, so the route out of the DSP block and the
        accumulator's carry chain are in different cycles; 3 (the ECP5 designs): besides, the
        operands pass the ``MULT18X18D``'s input registers, so the operand multiplexer and the
        route into the block are in a cycle of their own. The array's latency is a cycle longer
        for each past the first (:func:`~cnnforge.hw.models.timing.array_latency`); the values
        are the same.
    narrow_passes : bool
        True: an OR pass of a row's last column group with fewer than C pixels drains only
        those and is shorter (:func:`~cnnforge.hw.models.perf.or_pass_beats`); False: every
        pass drains R·C results (the UP5K's time-shared design, which fills the device: the
        logic for it, two dozen cells, left nextpnr without a legal placement).

    Raises
    ------
    ConfigError
        On a size out of range.
    """

    rows: int = 4
    cols: int = 4
    input_buffer_bytes: int = 4096
    dataflow: str = "or"
    algorithm: str = "auto"
    lutram_buffers: bool = False
    spram_feature_maps: bool = False
    spram_weights: bool = False
    ppu_interval: int = 1
    loader_lanes: int = 1
    product_registers: int = 1
    weight_bank_words: int = 0
    fm_bank_words: int = 0
    narrow_passes: bool = True

    def __post_init__(self):
        if not (1 <= self.rows <= 64 and 1 <= self.cols <= 64):
            raise ConfigError(f"array {self.rows}x{self.cols}: rows and cols must be in 1..64")
        if self.dataflow not in DATAFLOWS + ("auto",):
            raise ConfigError(f"dataflow {self.dataflow!r}: choose one of 'or', 'ir', 'wr', "
                              "'auto'")
        if self.algorithm not in ("auto", "direct", "winograd"):
            raise ConfigError(f"algorithm {self.algorithm!r}: choose one of 'auto', 'direct', "
                              "'winograd'")
        if self.ppu_interval not in (1, 2):
            raise ConfigError(f"ppu_interval={self.ppu_interval}: the post-processor takes a "
                              "beat every 1 or 2 cycles")
        if self.loader_lanes not in (1, 2):
            raise ConfigError(f"loader_lanes={self.loader_lanes}: the tile loader moves 1 or 2 "
                              "values a cycle")
        if self.product_registers not in (1, 2, 3):
            raise ConfigError(f"product_registers={self.product_registers}: a PE's multiply is "
                              "registered once, twice or three times")
        banks = self.weight_bank_words
        if banks < 0 or banks & (banks - 1) or (banks and self.spram_weights):
            raise ConfigError(f"weight_bank_words={banks}: banks of a weight ROM, a power of "
                              "two words (0: one memory), not with spram_weights")
        fm_banks = self.fm_bank_words
        if fm_banks < 0 or fm_banks & (fm_banks - 1) or (fm_banks and self.spram_feature_maps):
            raise ConfigError(f"fm_bank_words={fm_banks}: banks of the feature map, a power of "
                              "two values (0: one memory), not with spram_feature_maps")
        if self.loader_lanes > 1 and self.spram_feature_maps:
            raise ConfigError("loader_lanes=2 reads the feature map on two ports at once: not "
                              "with spram_feature_maps (one single-port block per slot)")
        if self.input_buffer_bytes < self.cols:
            raise ConfigError(f"input_buffer_bytes={self.input_buffer_bytes} is smaller than one "
                              f"word per bank ({self.cols} banks)")

    @property
    def pes(self):
        return self.rows * self.cols

    @property
    def banked_fm(self):
        """The feature map is read in banks (``fm_bank_words``)."""
        return self.fm_bank_words > 0

    @property
    def banked_weights(self):
        """The weight ROM is read in banks (``weight_bank_words``)."""
        return self.weight_bank_words > 0

    @property
    def lanes(self):
        """int8 lanes per weight-ROM word: R (OR, IR) or C (WR preloads a row of C weights)."""
        return max(self.rows, self.cols)

    @property
    def min_block_beats(self):
        """Shortest block in the stationary dataflows (IR, WR): a row is preloaded C cycles after
        the previous block's first beat entered it, before the next block's first beat enters
        it, and the R rows take R cycles: max(C + 1, R)."""
        return max(self.cols + 1, self.rows)

    @property
    def min_pass_beats(self):
        """The shortest a pass of C valid columns lasts: I·R·C + 1 (I = :attr:`ppu_interval`),
        so the drain (one result every I cycles, starting the cycle after ``done``) reads every
        PE before the next pass finishes (see ``SystolicArray``); a row's last column group of
        fewer columns drains and lasts less (:func:`~cnnforge.hw.models.perf.or_pass_beats`)."""
        return self.drain_cycles(self.cols) + 1

    def drain_cycles(self, cols):
        """Cycles the OR drain takes for a pass of ``cols`` valid columns: I·R·cols (one
        result every I cycles, the R rows of its valid columns)."""
        return self.ppu_interval * self.rows * cols

    @property
    def pass_fifo_depth(self):
        """Entries of the pass metadata FIFO (:func:`~cnnforge.hw.models.timing.pass_fifo_depth`
        for this design's shortest pass, tile read and array latency)."""
        # the shortest pass: one beat, a row's last group of one pixel
        return pass_fifo_depth(or_pass_beats(1, self, drained_columns(1, self)),
                               tile_read_latency(self.lutram_buffers, self.banked_weights),
                               array_latency(self.rows, self.cols, self.product_registers))


#: Loop bounds the engine compares its counters against every cycle: the descriptor also holds
#: each minus one (``"last_<name>"``, the counter's last value), so that no subtraction on a
#: descriptor field sits in front of a comparison (clamped at 0 where a layer type does not use
#: the bound). Not to be confused with ``rows_last`` / ``cols_last`` / ``groups_last``: the
#: sizes of the last tile.
LAST_FIELDS = ("K", "L", "MB", "ntr", "ntc", "N", "Tr_in", "kh", "kw", "sw", "KB", "nblk",
               "out_size", "ld_blocks", "w_taps", "walk_kw", "ld_xits", "ld_nits",
               "ld_nits_tail")

# Descriptor fields, in the order of the hardware struct. Each value is an int per layer.
DESCRIPTOR_FIELDS = (
    # depthwise: the lane or the row mapping (dw_rows); channel-banked input tile
    "df", "dw_lanes", "dw_rows", "banks_on_rows",
    # geometry
    "N", "H", "W", "M", "OH", "OW", "kh", "kw", "sh", "sw", "pshift", "PH", "PW",
    # quantization
    "z_in", "z_out", "act_min", "act_max",
    # memory bases
    "src", "dst", "w_base", "ch_base",
    # tiling
    "Tr", "Tc", "Tr_in", "Tc_in", "ntr", "ntc", "rows_last", "cols_last", "groups_full",
    "groups_last", "MB", "K", "L", "KB", "Lmin",
    # OR: a row's last column group of a full / the last tile column: its columns − 1 and its
    # pass's length − 1 (the drain reads only its columns: or_pass_beats)
    "ctail_full", "ctail_last", "ltail_full", "ltail_last",
    # weight words an OR pass reads before it starts over (K; depthwise: kh·kw, once per channel)
    "w_taps",
    # loader address steps; the loads of a tile: ld_blocks of ld_chans channels (the last
    # ld_chans_tail), ld_blk_step apart in the feature map (depthwise: one load per block of R
    # channels, else one load of all N)
    "ld_start", "ld_row_step", "ld_chan_step", "ld_tile_col_step", "ld_tile_row_step",
    "ld_blocks", "ld_chans", "ld_chans_tail", "ld_blk_step",
    "y_start", "x_start", "tile_y_step", "tile_x_step",
    # the loader's two lanes (loader_pairing): whether the layer uses them, lane 1's feature-map
    # offset, the loop's iterations per tile row and per load (ld_nits_tail: the last block's),
    # whether the last channel pair has lane 1 idle, where lane 1 leaves the tile row and the
    # map, the feature-map step at the end of an x pair
    "ld_pair", "ld_pair_step", "ld_xits", "ld_nits", "ld_nits_tail", "ld_odd", "ld_odd_tail",
    "ld_x1_lim", "ld_x1_lo", "ld_x1_hi", "ld_x_jump",
    # input tile buffer layout
    "Wq", "row_words", "slot_words",
    # feeder address steps
    "fd_row_step", "fd_ky_step", "fd_chan_step", "chan_words", "nblk",
    # output; OR passes' destination address steps: next block of R channels (R·PHW), next
    # tile row ((Tr >> pshift)·PW)
    "PHW", "oy_lim", "ox_lim", "out_size", "out_mb_step", "out_tile_step",
    # element-wise add: second source and its rescaling tables' base
    "src2", "t_base",
    # derived (_derived_fields): loop bounds minus one; the pooling window's mask
    # (2^pshift − 1) and the pooling phase a tile row advances by (Tr & mask)
    *(f"last_{name}" for name in LAST_FIELDS), "pool_mask", "tr_phase_step",
)


def _derived_fields(v):
    """Add the descriptor fields computed from the others (see :data:`DESCRIPTOR_FIELDS`)."""
    for name in LAST_FIELDS:
        v[f"last_{name}"] = max(v[name] - 1, 0)
    v["pool_mask"] = (1 << v["pshift"]) - 1
    v["tr_phase_step"] = v["Tr"] & v["pool_mask"]


@dataclass
class LayerPlan:
    """One layer as the engine runs it (a Conv2d or Linear, its activation and max-pool).

    All fields are per image; ``ops`` are the quantized ops it covers (the last one's output is
    what the layer writes to the feature map).
    """

    name: str
    ops: list
    values: dict = field(default_factory=dict)

    def __getattr__(self, key):
        values = self.__dict__.get("values", {})
        if key in values:
            return values[key]
        raise AttributeError(key)

    @property
    def type(self):
        return "+".join(op.type for op in self.ops)

    @property
    def dataflow(self):
        """``"or"``, ``"ir"`` or ``"wr"`` (a Winograd layer runs output stationary: ``"or"``;
        an element-wise add streams: ``"eltwise"``)."""
        df = Dataflow(self.values["df"])
        if df is Dataflow.ADD:
            return "eltwise"
        return Dataflow.OR.key if df is Dataflow.WINOGRAD else df.key

    @property
    def algorithm(self):
        """``"winograd"``, ``"depthwise"`` (direct, one input channel per output channel),
        ``"eltwise"`` or ``"direct"``."""
        df = Dataflow(self.values["df"])
        if df is Dataflow.WINOGRAD:
            return "winograd"
        if df is Dataflow.ADD:
            return "eltwise"
        return "depthwise" if self.values.get("dw") else "direct"

    @property
    def tiling(self):
        """Zhang et al.'s tile sizes: Tm output channels and Tn input channels held on chip at
        once (WR: the C×R weight block in the array), Tr × Tc output pixels."""
        v = self.values
        df = Dataflow(v["df"])
        if df is Dataflow.WR:
            tm, tn = min(v["M"], v["MBw"]), min(v["N"], v["NBw"])
        elif df is Dataflow.ADD:
            return {"Tm": v["M"], "Tn": v["N"], "Tr": v["OH"], "Tc": v["OW"]}
        else:
            tm, tn = v["M"], v["N"]
        scale = 2 if df is Dataflow.WINOGRAD else 1    # Winograd tiles count 2×2 outputs
        return {"Tm": tm, "Tn": tn, "Tr": scale * v["Tr"], "Tc": scale * v["Tc"]}

    @property
    def gemm(self):
        return self.ops[0]

    @property
    def macs(self):
        return self.gemm.macs

    @property
    def multiplications(self):
        """Multiplications per image: the MACs of direct convolution; for Winograd
        F(2×2, 3×3), 16 per 4×4 tile per (output, input) channel pair."""
        if self.values["df"] != Dataflow.WINOGRAD:
            return self.macs
        v = self.values
        return v["M"] * v["N"] * 16 * v["OH"] * v["OW"]     # OH, OW count 2×2 tiles here

    @property
    def passes(self):
        """Number of array passes (each R output channels × C output pixels)."""
        v = self.values
        last_tc0 = (v["ntc"] - 1) * v["Tc"]
        return v["MB"] * sum(rows * (v["groups_last"] if tc0 == last_tc0 else v["groups_full"])
                             for _, tc0, rows, _ in tile_order(v))


@dataclass
class Program:
    """A compiled network: what the accelerator is elaborated from.

    Members
    -------
    config : AcceleratorConfig
    qnet : QuantizedNetwork
    layers : list of LayerPlan
    weights : ndarray, int8, shape (depth, rows)
        Weight ROM: word ``w_base + mb·K + k`` holds W[mb·R + r, k] for r in 0..R−1 (0 beyond M).
    params : list of dict
        Parameter ROM: ``{"bias", "multiplier", "shift"}`` per output channel of every layer.
    fm_depth : int
        Feature-map memory depth: ``fm_slots`` slots (regions) of equal size.
    fm_slots : int
        Feature-map slots (two for a chain of layers, more for residual networks).
    slot_words : int
        Depth of one half of each input tile buffer bank.
    acc_width : int
        Accumulator width: enough for every layer's largest sum (:func:`reduction_width`; for
        Winograd layers the transformed products, see ``sim/winograd.py``).
    w_width, x_width : int
        PE operand widths: 8, or 12 and 11 with Winograd layers (U and V).
    y4_width : int
        Width of the Winograd output-transform accumulators (4·Y), 0 without Winograd.
    image_size, output_size : int
        int8 values in one input image and in the logits.
    """

    config: AcceleratorConfig
    qnet: object
    layers: list
    weights: np.ndarray
    params: list
    fm_depth: int
    slot_words: int
    acc_width: int
    image_size: int
    output_size: int
    w_width: int = 8
    x_width: int = 8
    y4_width: int = 0
    fm_slots: int = 2

    @property
    def winograd_depth(self):
        """Depth of one half of each transformed-input (V) buffer bank: 16 values per input
        channel of the widest Winograd layer (0 without Winograd layers)."""
        return max([16 * layer.values["N"] for layer in self.layers
                    if layer.values["df"] == Dataflow.WINOGRAD] + [0])

    def descriptor_widths(self):
        """Bits per descriptor field, derived from the values (signed where any is negative)."""
        widths = {}
        for name in DESCRIPTOR_FIELDS:
            vals = [layer.values[name] for layer in self.layers]
            lo, hi = min(vals), max(vals)
            if lo < 0:
                widths[name] = (True, max(max(hi, 0).bit_length(), (-lo - 1).bit_length()) + 1)
            else:
                widths[name] = (False, max(1, hi.bit_length()))
        return widths

    @property
    def pooling(self):
        """Whether a layer has a fused max-pool (the post-processor's read-modify-write)."""
        return any(layer.values.get("pool_mask", 0) for layer in self.layers)

    @property
    def fm_addr_width(self):
        """Bits of a feature-map address."""
        return addr_width(self.fm_depth)

    def most(self, *names):
        """The largest value of these plan fields over the layers (what a counter or a register
        must hold)."""
        return max(layer.values[n] for layer in self.layers for n in names)

    def meta_widths(self):
        """Bits per field of the engine's metadata FIFO entries (:func:`meta_widths`)."""
        return meta_widths([layer.values for layer in self.layers], self.config,
                           self.fm_addr_width)

    @property
    def rounding(self):
        """The post-processor's requantizer: the network's ``rounding``
        (:attr:`cnnforge.hw.frontend.quantize.QuantizedNetwork.rounding`)."""
        return self.qnet.rounding

    @property
    def stationary(self):
        """Whether a layer runs input or weight stationary (the partial-sum buffer exists)."""
        return any(Dataflow(layer.values["df"]).stationary for layer in self.layers)

    @property
    def depthwise_rows(self):
        """Whether a layer runs in the depthwise row mapping (:func:`dw_rows`: the array's row
        inputs exist)."""
        return any(layer.values.get("dw_rows") for layer in self.layers)

    @property
    def add_tables(self):
        """The element-wise adds' rescaling tables, concatenated (see :func:`_add_tables`):
        int64 array, 512 entries per add layer, at each layer's ``t_base``."""
        tables = [_add_tables(layer.ops[0]) for layer in self.layers
                  if layer.values["df"] == Dataflow.ADD]
        return np.concatenate(tables) if tables else np.zeros(0, np.int64)

    @property
    def psum_depth(self):
        """Depth of one ping-pong half of each partial-sum buffer bank: M of IR layers (one
        p-group's outputs per column), Tr·Tc of WR layers (one tile's pixels per column)."""
        depth = [1]
        for layer in self.layers:
            v = layer.values
            if v["df"] == Dataflow.IR:
                depth.append(v["M"])
            elif v["df"] == Dataflow.WR:
                depth.append(v["Tr"] * v["Tc"])
        return max(depth)

    @property
    def input_banks(self):
        """Banks of the input tile buffer: C (x-banked, OR/IR), R if a WR layer needs more."""
        cfg = self.config
        wr = any(layer.values.get("banks_on_rows") for layer in self.layers)
        return max(cfg.cols, cfg.rows if wr else 1)

    def plan(self):
        """The design choices as a JSON-able dict (``cnnforge ... --plan FILE`` reads it back
        with :func:`load_plan`): array, buffer budget, the configuration fields that change
        cycles or memories (:data:`PLAN_FIELDS`), and per layer dataflow and tile."""
        cfg = self.config
        return {"rows": cfg.rows, "cols": cfg.cols,
                "input_buffer_bytes": cfg.input_buffer_bytes,
                **{name: getattr(cfg, name) for name in PLAN_FIELDS},
                "layers": {layer.name: {"dataflow": layer.dataflow,
                                        "algorithm": ("direct" if layer.algorithm == "depthwise"
                                                      else layer.algorithm),
                                        "Tr": layer.values["Tr"], "Tc": layer.values["Tc"]}
                           for layer in self.layers if layer.values["df"] != Dataflow.ADD}}

    @property
    def ideal_cycles(self):
        return sum(_ceil_div(layer.macs, self.config.pes) for layer in self.layers)


def _add_tables(op):
    """The two 256-entry tables of an element-wise add: entry ``x + 128`` holds input ``x``
    rescaled to the common scale (:func:`cnnforge.sim.golden.add_rescale`), first input then
    second. int64 (512,)."""
    x = np.arange(-128, 128)
    return np.concatenate([
        add_rescale(x, op.input_zero_point, op.add_multiplier[0], op.add_shift[0]),
        add_rescale(x, op.input2_zero_point, op.add_multiplier[1], op.add_shift[1])])


def _layers_from_ops(qnet):
    """The ops of each engine layer (see :func:`_engine_layers`)."""
    return _engine_layers(qnet)[0]


def _engine_layers(qnet):
    """Group quantized ops into engine layers: GEMM op [+ max-pool], or an element-wise add
    (Flatten is free: the feature map is stored C, H, W-major, which is Flatten's order).

    Returns ``(groups, sources)``: the ops of each engine layer, and for each the engine layers
    whose outputs it reads (−1: the input image)."""
    groups, sources = [], []
    op_layer = {-1: -1}                     # op index -> engine layer holding its output
    ops = qnet.ops
    inputs = [op.inputs if op.inputs is not None else [i - 1] for i, op in enumerate(ops)]
    readers = {i: [j for j, ins in enumerate(inputs) if i in ins] for i in range(len(ops))}
    for i, op in enumerate(ops):
        if op.kind in ("conv", "linear", "add"):
            if op.kind == "conv" and op.groups != 1 and not (
                    op.groups == op.input_shape[0] == op.output_shape[0]):
                raise NetworkError(f"layer {op.name} ({op.type}): groups={op.groups}: the "
                                   "accelerator runs dense (groups=1) and depthwise (groups = "
                                   "in_channels = out_channels) convolutions only")
            groups.append([op])
            sources.append([op_layer[j] for j in inputs[i]])
        elif op.kind == "maxpool":
            src = inputs[i][0]
            if (src < 0 or not groups or groups[-1][-1] is not ops[src]
                    or ops[src].kind != "conv" or readers[src] != [i]):
                raise NetworkError(f"layer {op.name} (MaxPool2d): the accelerator fuses max-pool "
                                   "into the Conv2d before it; it must directly follow one")
            (kh, kw), (sh, sw) = op.kernel_size, op.stride
            if (kh, kw) != (sh, sw) or kh != kw or kh & (kh - 1):
                raise NetworkError(f"layer {op.name} (MaxPool2d): the accelerator needs a square "
                                   f"window of a power-of-two size equal to its stride, got "
                                   f"kernel {op.kernel_size} stride {op.stride}")
            groups[-1].append(op)
        elif op.kind == "flatten":
            if op.act_min != -128 or op.act_max != 127:
                raise NetworkError(f"layer {op.name} (Flatten): an activation after Flatten is "
                                   "not supported by the accelerator; put it before")
        op_layer[i] = op_layer[inputs[i][0]] if op.kind == "flatten" else len(groups) - 1
    if not groups:
        raise NetworkError("network: has no Conv2d or Linear layer to run on the accelerator")
    if op_layer[len(ops) - 1] != len(groups) - 1:
        raise NetworkError("network: the output must come from the last engine layer")
    return groups, sources


def _add_values(op):
    """Descriptor values of an element-wise add: one output per cycle over the whole tensor
    (``out_size`` values, C, H, W order); every tiling field is 0."""
    c, h, w = (op.output_shape if len(op.output_shape) == 3
               else (int(np.prod(op.output_shape)), 1, 1))
    v = {name: 0 for name in DESCRIPTOR_FIELDS}
    v.update(df=Dataflow.ADD, N=c, M=c, H=h, W=w, OH=h, OW=w, kh=1, kw=1, sh=1, sw=1, ph=0,
             pw=0, pk=1, PH=h, PW=w, PHW=h * w, oy_lim=1, ox_lim=1, out_size=c * h * w,
             z_in=op.input_zero_point, z_out=op.output_zero_point, act_min=op.act_min,
             act_max=op.act_max, MB=0, dw=0, walk_kw=1)
    return v


def _allocate(sizes, sources, image_size):
    """Feature-map slots by liveness: the image is in slot 0; each layer writes a slot whose
    tensor is no longer read (never one of its own inputs). A chain alternates two slots.
    Returns (slot of each layer's output, number of slots, slot size in values)."""
    n = len(sizes)
    last_read = {-1: 0}
    for idx, srcs in enumerate(sources):
        for src in srcs:
            last_read[src] = max(last_read.get(src, -1), idx)
    holder = {0: -1}                       # slot -> tensor (layer index) it holds
    out = []
    for idx in range(n):
        free = [slot for slot, t in sorted(holder.items())
                if last_read.get(t, -1) < idx and t not in sources[idx]]
        slot = free[0] if free else len(holder)
        holder[slot] = idx
        out.append(slot)
    return out, len(holder), max([image_size] + list(sizes))


def _spram_region(region):
    """The feature-map slot size with one SPRAM block a slot: a power of two (the block is the
    address's high bits), at most :data:`SPRAM_SLOT_VALUES`."""
    if region > SPRAM_SLOT_VALUES:
        raise ConfigError(f"SPRAM feature maps: the largest map ({region:,} values) does not "
                          f"fit one SPRAM block ({SPRAM_SLOT_VALUES:,} int8 values)")
    return 1 << max(region - 1, 1).bit_length()


def _spram_slots(groups, sources, slots, region):
    """The feature-map slot size with the maps in SPRAM (:func:`_spram_region`), after checking
    every engine layer's accesses (:func:`_check_spram_layer`); ``groups``, ``sources`` as
    :func:`_engine_layers` gives them, ``slots`` and ``region`` as :func:`_allocate`.

    Raises
    ------
    ConfigError
        Naming the first layer (or the map) that single-port SPRAM slots cannot serve.
    """
    slot_of = {**dict(enumerate(slots)), -1: 0}
    for grp, srcs in zip(groups, sources):
        _check_spram_layer("+".join(o.name for o in grp), grp, srcs, slot_of)
    return _spram_region(region)


def _check_spram_layer(name, grp, sources, slot_of):
    """A layer's feature-map accesses on single-port SPRAM slots: never two in one cycle on a
    slot."""
    if len(grp) > 1:
        raise ConfigError(f"layer {name}: a fused pooling reads and writes its output slot in "
                          "one cycle, which single-port SPRAM feature maps cannot do")
    if len(sources) == 2 and slot_of[sources[0]] == slot_of[sources[1]]:
        raise ConfigError(f"layer {name}: both inputs in one feature-map slot, which "
                          "single-port SPRAM feature maps cannot read at once")


def weight_image(program):
    """The weights as the accelerator's ``i_weights`` stream takes them (SPRAM weights) and
    the host link and the SPI flash image carry them.

    Word by word of ``program.weights``, lane by lane; each lane one byte (int8, two's
    complement) or, with 12-bit Winograd weights, two bytes little endian.

    Returns
    -------
    bytes
        ``len(program.weights) · lanes · ⌈w_width / 8⌉`` bytes.
    """
    dtype = np.int8 if program.w_width <= 8 else np.dtype("<i2")
    return np.asarray(program.weights).astype(dtype).tobytes()


def _geometry(op, pool, cfg):
    """Layer geometry as the engine sees it (Linear = 1×1 convolution on a 1×1 map)."""
    if op.kind == "linear":
        n = op.input_shape[0]
        g = dict(N=n, H=1, W=1, M=op.output_shape[0], OH=1, OW=1, kh=1, kw=1, sh=1, sw=1,
                 ph=0, pw=0)
    else:
        n, h, w = op.input_shape
        m, oh, ow = op.output_shape
        (kh, kw), (sh, sw) = op.kernel_size, op.stride
        ph, pw = op.padding[:2]             # top, left; the bottom and right follow from OH, OW
        # a single output row (column) has no stride: 1 keeps the x-banked tile dense (a global
        # average pool's stride is its whole window)
        sh, sw = (1 if oh == 1 else sh), (1 if ow == 1 else sw)
        if _flattens(op, pool, oh):
            # a pointwise layer is one GEMM over the map's pixels, and the feature map's CHW
            # order is the same for the map as one row: run it so, and the array's C columns
            # take C pixels across the map's rows (no column idle at each row's end)
            h, w, oh, ow = 1, h * w, 1, oh * ow
        g = dict(N=n, H=h, W=w, M=m, OH=oh, OW=ow, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)
    g["dw"] = int(op.kind == "conv" and op.groups > 1)
    pk = pool.kernel_size[0] if pool is not None else 1
    g["pk"] = pk
    g["pshift"] = pk.bit_length() - 1
    g["PH"], g["PW"] = g["OH"] // pk, g["OW"] // pk
    return g


def _one_cycle_fm_reader(grp):
    """What in engine layer ``grp`` reads the feature map a cycle after the address (the add
    unit's inputs, a fused max-pool's read-modify-write), or None: such a layer cannot run
    with the feature map in banks (``AcceleratorConfig.fm_bank_words``)."""
    if grp[0].kind == "add":
        return "an element-wise add"
    if len(grp) > 1 and grp[1].kernel_size[0] > 1:
        return "a fused max-pool"
    return None


def fm_bankable(qnet):
    """Whether ``qnet`` compiles with the feature map in banks: no engine layer reads it in one
    cycle (no element-wise add, no fused max-pool)."""
    return not any(_one_cycle_fm_reader(grp) for grp in _layers_from_ops(qnet))


def _flattens(op, pool, oh):
    """Whether a convolution runs on its map flattened to one row: 1×1, stride 1, no padding,
    dense, no fused pooling (whose windows need the rows), more than one output row."""
    return (tuple(op.kernel_size) == (1, 1) and tuple(op.stride) == (1, 1) and not any(op.padding)
            and op.groups == 1 and pool is None and oh > 1)


def _winograd_geometry(g):
    """The geometry the loader and im2col walker see for a Winograd layer: 4×4 input tiles at
    stride 2, one "output pixel" per 2×2 output tile (OH, OW become the tile counts); the real
    output size stays in PH, PW (pooling) and OHr, OWr."""
    v = dict(g)
    v.update(kh=4, kw=4, sh=2, sw=2, OH=-(-g["OH"] // 2), OW=-(-g["OW"] // 2),
             OHr=g["OH"], OWr=g["OW"])
    return v


def _tiling(g, Tr, Tc, cfg, df):
    """Derived tiling values for output tile Tr × Tc and dataflow ``df`` (a
    :class:`~cnnforge.hw.models.dataflow.Dataflow`: OR, IR, WR or WINOGRAD; for Winograd, ``g``
    is from :func:`_winograd_geometry` and Tr × Tc counts 2×2 output tiles), the input tile
    buffer layout included."""
    R, C = cfg.rows, cfg.cols
    df = Dataflow(df)
    v = dict(g)
    v["df"] = df
    v["Tr"], v["Tc"] = Tr, Tc
    v["Tr_in"] = (Tr - 1) * g["sh"] + g["kh"]
    v["Tc_in"] = (Tc - 1) * g["sw"] + g["kw"]
    v["ntr"], v["ntc"] = _ceil_div(g["OH"], Tr), _ceil_div(g["OW"], Tc)
    v["rows_last"] = g["OH"] - (v["ntr"] - 1) * Tr
    v["cols_last"] = g["OW"] - (v["ntc"] - 1) * Tc
    v["groups_full"] = _ceil_div(Tc, C)
    v["groups_last"] = _ceil_div(v["cols_last"], C)
    v["K"] = g["N"] * g["kh"] * g["kw"]
    dw_chans = min(R, g["N"])               # depthwise: input channels a pass walks
    v["dw_rows"] = int(dw_rows(g, cfg, df))
    # (Dataflow.banks_on_rows, or the depthwise row mapping's channel-banked tile)
    v["banks_on_rows"] = int(df.banks_on_rows or v["dw_rows"])
    v["walk_kw"] = g["kw"]                  # the im2col walk's kernel columns
    if v["dw_rows"]:
        # row r's channel streams one input row segment of kw + C − 1 values per kernel row,
        # seen by column c from position c on (beats past kw have weight 0, not stored)
        v["walk_kw"] = g["kw"] + C - 1
        v["K"] = g["kh"] * v["walk_kw"]
    elif g.get("dw"):
        v["K"] = dw_chans * g["kh"] * g["kw"]
    # the depthwise lane mapping: each beat's weight word counts in one row only
    v["dw_lanes"] = int(bool(g.get("dw")) and not v["dw_rows"])
    v["L"] = max(v["K"], cfg.min_pass_beats)
    for k, cols in (("full", Tc), ("last", v["cols_last"])):
        tail = drained_columns(cols, cfg)
        # (without narrow passes unused: 0, a constant the sequencer folds)
        v[f"ctail_{k}"] = tail - 1 if cfg.narrow_passes else 0
        v[f"ltail_{k}"] = or_pass_beats(v["K"], cfg, tail) - 1 if cfg.narrow_passes else 0
    v["Lmin"] = cfg.min_block_beats
    if df is Dataflow.OR:          # R output channels per pass
        v["MB"], v["KB"] = _ceil_div(g["M"], R), 1
    elif df is Dataflow.WINOGRAD:
        # 16 passes (one per transform position) of N beats, R channels each
        v["MB"], v["KB"] = _ceil_div(g["M"], R), 16
        v["K"] = g["N"]
        v["L"] = max(g["N"], R + C + 1)     # the row-parallel drain reads row r R+C+r later
    elif df is Dataflow.IR:        # R reduction steps per block, all M channels streamed
        v["MB"], v["KB"] = 1, _ceil_div(v["K"], R)
        v["L"] = max(g["M"], v["Lmin"])
    else:                          # WR: C output channels per block, R input channels per block
        v["MB"], v["KB"] = _ceil_div(g["M"], C), g["kh"] * g["kw"] * _ceil_div(g["N"], R)
    v["w_taps"] = g["kh"] * g["kw"] if g.get("dw") else v["K"]
    v["nblk"] = _ceil_div(g["N"], R)
    v["MBw"], v["NBw"] = C, R            # WR weight block (columns × rows), for reports
    # the loads of a tile (TileLoader): a depthwise layer loads each block of R channels before
    # its passes, so its tile buffer holds R channels, not N
    if g.get("dw"):
        v["ld_blocks"], v["ld_chans"] = v["MB"], dw_chans
        v["ld_chans_tail"] = g["N"] - (v["MB"] - 1) * R
    else:
        v["ld_blocks"], v["ld_chans"], v["ld_chans_tail"] = 1, g["N"], g["N"]
    if v["banks_on_rows"]:
        # channel-banked: input (n, yi, xi) in bank n % R,
        # word (n // R)·Tr_in·Tc_in + yi·Tc_in + xi
        v["Wq"] = v["row_words"] = 0
        v["chan_words"] = v["Tr_in"] * v["Tc_in"]
        v["slot_words"] = _ceil_div(v["ld_chans"], R) * v["chan_words"]
    else:
        # x-banked: bank (xi // sw) % C, word ((n·Tr_in + yi)·sw + xi % sw)·Wq + xi // sw // C
        v["Wq"] = _ceil_div((v["Tc_in"] - 1) // g["sw"] + 1, C)
        v["row_words"] = g["sw"] * v["Wq"]
        v["chan_words"] = 0
        # a depthwise pass walks the R channels of its block, the only ones its load holds (the
        # last block's load may hold fewer: the words past them are stale, their weights 0)
        v["slot_words"] = v["ld_chans"] * v["Tr_in"] * v["row_words"]
    _loader_lanes(v, loader_pairing(v, g, cfg))
    return v


def dw_rows(g, cfg, df):
    """Whether a depthwise layer runs in the row mapping: array row r computes channel r of
    the block, its inputs from the channel-banked tile buffer's bank r broadcast along the row
    (skewed by r), the weights stream as in any OR pass, so that PE (r, c) at the pass's beat
    j of kernel row ky multiplies ``W[r, ky, j − c]`` by input column ``j`` of the segment
    (0 where ``j − c`` is not a tap): every PE does a useful MAC on kw of every kw + C − 1
    beats, instead of one beat in R (the lane mapping, still used for horizontal strides > 1
    and where it is faster).

    Parameters
    ----------
    g : dict
        The layer's geometry (:func:`_geometry`).
    cfg : AcceleratorConfig
    df : Dataflow

    Returns
    -------
    bool
    """
    R, C = cfg.rows, cfg.cols
    return (bool(g.get("dw")) and Dataflow(df) is Dataflow.OR and g["sw"] == 1
            and g["kw"] + C - 1 < R * g["kw"])


def _buffer_words(cfg, v):
    """Depth of one ping-pong half of each input tile buffer bank the budget allows, for a
    layer's values ``v`` (channel-banked: R banks, else C)."""
    return cfg.input_buffer_bytes // _banks(cfg, v)


def _banks(cfg, v):
    """Input tile buffer banks a layer's tile is spread over."""
    return cfg.rows if v["banks_on_rows"] else cfg.cols


def _plan_tiles(g, cfg, name, type_, df):
    """Choose Tr, Tc: the fastest tiling (by the performance model) whose input tile fits
    ``cfg.input_buffer_bytes``; output tiles are whole pooling windows."""
    pk = g["pk"] if df != Dataflow.WINOGRAD else max(1, g["pk"] // 2)
    best = None
    rows = sorted({min(t, g["OH"]) for t in range(pk, g["OH"] + pk, pk)})
    cols = sorted({min(t, g["OW"]) for t in range(pk, g["OW"] + pk, pk)})
    for Tr in rows:
        if Tr % pk and Tr != g["OH"]:
            continue
        for Tc in cols:
            if Tc % pk and Tc != g["OW"]:
                continue
            v = _tiling(g, Tr, Tc, cfg, df)
            if v["slot_words"] > _buffer_words(cfg, v):
                continue
            key = (layer_cycles(v, cfg), -Tr * Tc)
            if best is None or key < best[0]:
                best = (key, v)
    if best is None:
        v = _tiling(g, min(pk, g["OH"]), min(pk, g["OW"]), cfg, df)
        raise ConfigError(
            f"layer {name} ({type_}): even the smallest tile needs "
            f"{v['slot_words'] * _banks(cfg, v)} "
            f"bytes of input tile buffer ({v['ld_chans']} channels), more than "
            f"input_buffer_bytes={cfg.input_buffer_bytes}")
    return best[1]


def _weight_words(op, v, cfg):
    """Weight-ROM words of a layer, ``cfg.lanes`` int8 each, in the order its controller reads:

    * OR: word ``mb·K + k`` holds ``W[mb·R + r, k]`` in lane r; depthwise, lane mapping: word
      ``mb·kh·kw + t`` holds tap t = (ky, kx) of channel ``mb·R + r`` in lane r (the diagonal of
      the block: a pass of the lane mapping reads it once per channel, and the array zeroes
      every lane but the beat's channel; a pass of the row mapping (:func:`dw_rows`) reads it
      once, the array zeroing the beats past kw of each row segment — ``w_taps`` words);
    * IR: word ``m·KB + kb`` holds ``W[m, kb·R + r]`` in lane r (streamed, one channel a beat);
    * WR: word ``(mb·KB + kb)·R + r`` holds ``W[mb·C + c, n, ky, kx]`` in lane c with
      ``kb = (ky·kw + kx)·NB + nb`` and ``n = nb·R + r`` (preloaded, one array row a word).

    k = (n, ky, kx) row-major; lanes beyond M, K or N hold 0.
    """
    R, C, lanes = cfg.rows, cfg.cols, cfg.lanes
    M, K, N, kh, kw = v["M"], v["K"], v["N"], v["kh"], v["kw"]
    df = Dataflow(v["df"])
    if df is Dataflow.WINOGRAD:
        # word (mb·16 + ξ)·N + n holds U[mb·R + r, n, ξ] in lane r (U = G2 g G2ᵀ, 12 bits)
        u = np.zeros((v["MB"] * R, N, 16), np.int64)
        u[:M] = weight_transform(op.weight).reshape(M, N, 16)
        out = np.zeros((v["MB"], 16, N, lanes), np.int64)
        out[..., :R] = u.reshape(v["MB"], R, N, 16).transpose(0, 3, 2, 1)
        return out.reshape(-1, lanes)
    if v.get("dw"):
        wm = np.zeros((v["MB"] * R, kh * kw), np.int8)
        wm[:M] = op.weight.reshape(M, kh * kw)
        out = np.zeros((v["MB"], kh * kw, lanes), np.int8)
        out[:, :, :R] = wm.reshape(v["MB"], R, kh * kw).transpose(0, 2, 1)
        return out.reshape(-1, lanes)
    w = op.weight.reshape(M, N, kh, kw).astype(np.int8)
    if df is Dataflow.OR:
        out = np.zeros((v["MB"], K, lanes), np.int8)
        wm = np.zeros((v["MB"] * R, K), np.int8)
        wm[:M] = w.reshape(M, K)
        out[:, :, :R] = wm.reshape(v["MB"], R, K).transpose(0, 2, 1)
    elif df is Dataflow.IR:
        out = np.zeros((M, v["KB"], lanes), np.int8)
        wk = np.zeros((M, v["KB"] * R), np.int8)
        wk[:, :K] = w.reshape(M, K)
        out[:, :, :R] = wk.reshape(M, v["KB"], R)
    else:
        nb = _ceil_div(N, R)
        wp = np.zeros((v["MB"] * C, nb * R, kh, kw), np.int8)
        wp[:M, :N] = w
        # [mb, c, nb, r, ky, kx] -> [mb, ky, kx, nb, r, c]
        blk = wp.reshape(v["MB"], C, nb, R, kh, kw).transpose(0, 4, 5, 2, 3, 1)
        out = np.zeros((v["MB"], kh, kw, nb, R, lanes), np.int8)
        out[..., :C] = blk
    return out.reshape(-1, lanes)


def meta_widths(values, cfg, fm_addr_width):
    """Bits per field of a pass's (OR) or group's (IR, WR) output coordinates over the layers'
    plan ``values``, the entries of the engine's metadata FIFO (``hw/rtl/drain.py:
    meta_layout``): first channel ``m0 < M + R``, output row ``oy < OH + Tr``, first column
    ``ox0 < OW + Tc + C``, ``x_end <= OW``, ``rows <= Tr``, ``cols <= Tc``; an OR pass's valid
    columns − 1 ``c_last < C``; ``out_base``: an OR pass's first output address
    (``fm_addr_width`` + 1 bits)."""
    def most(name):
        return max(v[name] for v in values)

    def bits(n):
        return max(1, int(n).bit_length())
    R, C = cfg.rows, cfg.cols
    return {"m0": bits(most("M") + max(R, C)), "oy": bits(most("OH") + most("Tr")),
            "ox0": bits(most("OW") + most("Tc") + C), "x_end": bits(most("OW")),
            "rows": bits(most("Tr")), "cols": bits(most("Tc")),
            **({"c_last": bits(C - 1)} if cfg.narrow_passes else {}),
            "out_base": fm_addr_width + 1}


def addr_width(depth):
    """Bits of an address into ``depth`` words."""
    return max(1, (depth - 1).bit_length())


#: Configuration fields a plan records besides the array and the buffer budget (their
#: defaults when a plan does not give them).
PLAN_FIELDS = {"ppu_interval": 1, "lutram_buffers": False, "spram_feature_maps": False,
               "spram_weights": False, "loader_lanes": 1, "product_registers": 1,
               "weight_bank_words": 0, "fm_bank_words": 0, "narrow_passes": True}


def load_plan(plan, source="plan"):
    """Read a plan (dict, or the path of a JSON file written from :meth:`Program.plan`).

    Returns
    -------
    dict
        Keyword arguments of :func:`compile_network`: ``config``, ``tiles``, ``dataflows``,
        ``algorithms``.

    Raises
    ------
    ConfigError
        On a missing file, bad JSON or a malformed entry (naming the file and the entry).
    """
    if isinstance(plan, (str, os.PathLike)):
        source = str(plan)
        try:
            with open(plan) as f:
                plan = json.load(f)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read plan ({exc.strerror})") from None
        except ValueError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc})") from None
    try:
        cfg = AcceleratorConfig(rows=int(plan["rows"]), cols=int(plan["cols"]),
                                input_buffer_bytes=int(plan.get("input_buffer_bytes", 4096)),
                                **{name: type(default)(plan[name])
                                   for name, default in PLAN_FIELDS.items() if name in plan})
        tiles, dataflows, algorithms = {}, {}, {}
        for name, entry in plan.get("layers", {}).items():
            dataflows[name] = entry.get("dataflow", "auto")
            algorithms[name] = entry.get("algorithm", "auto")
            if "Tr" in entry and "Tc" in entry:
                tiles[name] = (int(entry["Tr"]), int(entry["Tc"]))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{source}: malformed plan ({type(exc).__name__}: {exc})") from None
    return {"config": cfg, "tiles": tiles, "dataflows": dataflows, "algorithms": algorithms}


def compile_network(qnet, config=None, *, tiles=None, dataflows=None, algorithms=None):
    """Compile a quantized network for an accelerator configuration.

    Parameters
    ----------
    qnet : QuantizedNetwork
    config : AcceleratorConfig, optional
    tiles : dict, optional
        ``{layer name: (Tr, Tc)}`` to override the planner for some layers.
    dataflows : dict, optional
        ``{layer name: "or" | "ir" | "wr" | "auto"}`` overriding ``config.dataflow``.
    algorithms : dict, optional
        ``{layer name: "direct" | "winograd" | "auto"}`` overriding the Conv2d's
        ``algorithm``. ``auto`` takes Winograd F(2×2, 3×3) for a 3×3 stride-1 layer when the
        performance model finds it faster than the best direct dataflow.

    Returns
    -------
    Program

    Raises
    ------
    NetworkError
        If the network uses something the engine cannot run (naming the layer), or its ops mix
        requantizer roundings (one post-processor serves every layer).
    ConfigError
        If the configuration cannot hold a layer (naming the layer, the need and the budget).
    """
    cfg = config or AcceleratorConfig()
    qnet.rounding                       # raises if the ops mix roundings
    groups, sources = _engine_layers(qnet)
    image_size = int(np.prod(qnet.ops[0].input_shape))
    slots, n_slots, region = _allocate([int(np.prod(grp[-1].output_shape)) for grp in groups],
                                 sources, image_size)
    if cfg.spram_feature_maps:
        region = _spram_slots(groups, sources, slots, region)
    slot_of = dict(enumerate(slots))
    slot_of[-1] = 0
    layers, weight_words, params = [], [], []
    t_base = 0
    names = ["+".join(o.name for o in grp) for grp in groups]
    for key in list(tiles or {}) + list(dataflows or {}) + list(algorithms or {}):
        if key not in names:
            raise ConfigError(f"no engine layer named {key!r} (layers: {', '.join(names)})")
    acc_bits, y4_bits = 1, 0
    for index, (grp, name) in enumerate(zip(groups, names)):
        op = grp[0]
        pool = grp[1] if len(grp) > 1 else None
        type_ = "+".join(o.type for o in grp)
        reader = _one_cycle_fm_reader(grp)
        if cfg.banked_fm and reader:
            raise ConfigError(f"layer {name} ({type_}): {reader} reads the feature map in one "
                              f"cycle; fm_bank_words={cfg.fm_bank_words} reads it in "
                              f"{read_port_latency(True)}")
        if op.kind == "add":
            if cfg.ppu_interval > 1:
                raise ConfigError(f"layer {name} ({type_}): an element-wise add feeds the "
                                  f"post-processor every cycle; ppu_interval={cfg.ppu_interval} "
                                  "needs every layer in output reuse")
            v = _add_values(op)
            v.update(src=slot_of[sources[index][0]] * region,
                     src2=slot_of[sources[index][1]] * region, dst=slot_of[index] * region,
                     w_base=0, ch_base=len(params), t_base=t_base)
            t_base += 512
            params.append({"bias": 0, "multiplier": int(op.multiplier[0]),
                           "shift": int(op.shift[0])})
            acc_bits = max(acc_bits, int(np.abs(_add_tables(op)).max()).bit_length() + 2)
            layers.append(LayerPlan(name=name, ops=grp, values=v))
            continue
        g = _geometry(op, pool, cfg)
        candidates = _candidates(op, g, cfg, name, type_, dataflows or {}, algorithms or {})
        v = _best_plan(g, cfg, name, type_, candidates, (tiles or {}).get(name))
        v["z_in"] = op.input_zero_point
        v["z_out"] = op.requant_offset
        v["act_min"] = max(o.act_min for o in grp)
        v["act_max"] = min(o.act_max for o in grp)
        v["src"] = slot_of[sources[index][0]] * region
        v["dst"] = slot_of[index] * region
        v["src2"] = v["t_base"] = 0
        v["w_base"] = len(weight_words)
        v["ch_base"] = len(params)
        _address_steps(v, g, cfg)
        weight_words.extend(_weight_words(op, v, cfg))
        for mm in range(g["M"]):
            params.append({"bias": int(op.bias[mm]), "multiplier": int(op.multiplier[mm]),
                           "shift": int(op.shift[mm])})
        if v["df"] is Dataflow.WINOGRAD:
            wide = winograd_widths(v["N"])
            acc_bits = max(acc_bits, wide["M"])
            y4_bits = max(y4_bits, wide["Y4"])
        else:
            acc_bits = max(acc_bits, reduction_width(op, v["K"]))
        layers.append(LayerPlan(name=name, ops=grp, values=v))
    for layer in layers:
        _derived_fields(layer.values)
    slot_words = max(max(layer.values["slot_words"] for layer in layers), 1)
    weights = np.array(weight_words, np.int64).reshape(-1, cfg.lanes)
    wino = y4_bits > 0
    return Program(config=cfg, qnet=qnet, layers=layers, weights=weights, params=params,
                   fm_depth=n_slots * region, fm_slots=n_slots, slot_words=slot_words,
                   acc_width=acc_bits, image_size=image_size,
                   output_size=int(np.prod(groups[-1][-1].output_shape)),
                   w_width=12 if wino else 8, x_width=11 if wino else 8, y4_width=y4_bits)


def _candidates(op, g, cfg, name, type_, dataflows, algorithms):
    """The dataflows a GEMM layer may run, from the configuration and the per-layer choices
    (:func:`_best_plan` takes the fastest of them).

    Parameters
    ----------
    op : QuantOp
        The layer's GEMM op (Conv2d or Linear).
    g : dict
        Its geometry (:func:`_geometry`).
    cfg : AcceleratorConfig
    name, type_ : str
        The engine layer's name and type, for the messages.
    dataflows, algorithms : dict
        :func:`compile_network`'s per-layer choices (``{layer name: "or" | ... | "auto"}``,
        ``{layer name: "direct" | "winograd" | "auto"}``).

    Returns
    -------
    list of Dataflow
        OR, IR, WR for ``"auto"``, the one asked for otherwise (OR only for a depthwise layer,
        whatever the network-wide dataflow); WINOGRAD alone for ``"winograd"``, or added for
        ``"auto"`` where Winograd applies.

    Raises
    ------
    ConfigError
        For an unknown dataflow or algorithm, or a depthwise layer asked by name to run IR or
        WR.
    NetworkError
        For Winograd asked of a layer it does not apply to.
    """
    choice = dataflows.get(name, cfg.dataflow)
    if choice not in DATAFLOWS + ("auto",):
        raise ConfigError(f"layer {name} ({type_}): dataflow {choice!r}: choose one of "
                          "'or', 'ir', 'wr', 'auto'")
    candidates = list(DIRECT) if choice == "auto" else [DIRECT[DATAFLOWS.index(choice)]]
    if g["dw"]:
        # a network-wide IR or WR applies where a layer supports it: depthwise (and average
        # pool) layers keep OR; asking it of the layer by name is an error
        if name in dataflows and choice not in ("or", "auto"):
            raise ConfigError(f"layer {name} ({type_}): a depthwise layer runs output "
                              f"stationary only (dataflow 'or'), not {choice!r}")
        candidates = [Dataflow.OR]
    layer0 = op.layers[0]
    applies = op.kind == "conv" and getattr(layer0, "winograd_applies", False)
    if cfg.algorithm == "auto":
        default = getattr(layer0, "algorithm", "direct")
    else:
        default = "winograd" if cfg.algorithm == "winograd" and applies else "direct"
    algorithm = algorithms.get(name, default)
    if algorithm not in ALGORITHMS + ("auto",):
        raise ConfigError(f"layer {name} ({type_}): algorithm {algorithm!r}: choose one of "
                          "'direct', 'winograd', 'auto'")
    if algorithm == "winograd" and not applies:
        raise NetworkError(f"layer {name} ({type_}): Winograd F(2x2, 3x3) needs a 3x3 kernel "
                           f"with stride 1 and groups=1, got kernel {op.kernel_size} stride "
                           f"{op.stride} groups {op.groups}")
    if algorithm == "winograd":
        candidates = [Dataflow.WINOGRAD]
    elif algorithm == "auto" and applies:
        candidates.append(Dataflow.WINOGRAD)
    if cfg.ppu_interval > 1:
        if Dataflow.OR not in candidates:
            raise ConfigError(f"layer {name} ({type_}): runs {candidates[0].key}, whose drain "
                              f"feeds the post-processor every cycle; ppu_interval="
                              f"{cfg.ppu_interval} needs output reuse (dataflow 'or', direct)")
        candidates = [Dataflow.OR]
    return candidates


def _best_plan(g, cfg, name, type_, candidates, override=None):
    """The tiling of a GEMM layer: the fastest of its candidate dataflows by the performance
    model (the lower ``Dataflow`` on a tie), each with the planner's tiles or ``override``.

    Parameters
    ----------
    g : dict
        The layer's geometry (:func:`_geometry`).
    cfg : AcceleratorConfig
    name, type_ : str
        The engine layer's name and type, for the messages.
    candidates : list of Dataflow
        From :func:`_candidates`.
    override : (int, int), optional
        ``(Tr, Tc)`` instead of the planner's choice (:func:`_plan_tiles`).

    Returns
    -------
    dict
        The values of :func:`_tiling` for the chosen dataflow and tile.

    Raises
    ------
    ConfigError
        The first candidate's, when no candidate's tile fits the input tile buffer.
    """
    plans, errors = [], []
    for df in candidates:
        geo = _winograd_geometry(g) if df is Dataflow.WINOGRAD else g
        try:
            if override is not None:
                v = _tiling(geo, *override, cfg, df)
                if v["slot_words"] > _buffer_words(cfg, v):
                    raise ConfigError(
                        f"layer {name} ({type_}): tile {tuple(override)} needs "
                        f"{v['slot_words'] * _banks(cfg, v)} bytes of input tile buffer, more than "
                        f"input_buffer_bytes={cfg.input_buffer_bytes}")
            else:
                v = _plan_tiles(geo, cfg, name, type_, df)
            plans.append((layer_cycles(v, cfg), df, v))
        except ConfigError as exc:
            errors.append(exc)
    if not plans:
        raise errors[0]
    _, _, v = min(plans, key=lambda p: (p[0], p[1]))
    return v


def loader_pairing(v, g, cfg):
    """What the tile loader's two lanes take in a layer (``AcceleratorConfig.loader_lanes``):
    ``"x"`` (x and x + stride of a tile row: x-banked banks b and b + 1 mod C), ``"channels"``
    (channels n and n + 1, n even: channel-banked banks n mod R and n mod R + 1, R even) or
    None (one lane: one lane configured, a fused max-pool, whose read-modify-write has the
    second read port, an element-wise add, or a single bank to write).

    Parameters
    ----------
    v, g : dict
        The layer's values (tiling, ``banks_on_rows``) and geometry (``pk``).
    cfg : AcceleratorConfig

    Returns
    -------
    str or None
    """
    if cfg.loader_lanes < 2 or g.get("pk", 1) > 1 or Dataflow(v["df"]) is Dataflow.ADD:
        return None
    if v["banks_on_rows"]:
        return "channels" if cfg.rows % 2 == 0 else None
    return "x" if cfg.cols > 1 else None


def _loader_lanes(v, pairing):
    """The descriptor fields of the loader's lanes (:data:`DESCRIPTOR_FIELDS`) for ``pairing``
    (:func:`loader_pairing`), and ``ld_xlast``, the last tile-row position lane 0 takes.
    x pairs: lane 0 takes the tile columns xi with (xi // sw) even, lane 1 xi + sw while
    xi + sw < Tc_in; channel pairs: every (y, x) of channels n (lane 0) and n + 1."""
    Tc_in, sw = v["Tc_in"], v["sw"]
    lane0 = [xi for xi in range(Tc_in) if pairing != "x" or (xi // sw) % 2 == 0]
    halve = (lambda n: _ceil_div(n, 2)) if pairing == "channels" else (lambda n: n)
    v.update(ld_pair=int(pairing is not None), ld_xits=len(lane0), ld_xlast=lane0[-1],
             ld_nits=halve(v["ld_chans"]), ld_nits_tail=halve(v["ld_chans_tail"]),
             ld_odd=int(pairing == "channels" and v["ld_chans"] % 2),
             ld_odd_tail=int(pairing == "channels" and v["ld_chans_tail"] % 2),
             ld_x_jump=sw + 1 if pairing == "x" else 1)
    if pairing == "x":
        v.update(ld_pair_step=sw, ld_x1_lim=Tc_in - sw, ld_x1_lo=-sw, ld_x1_hi=v["W"] - sw)
    elif pairing == "channels":        # (lane 1 at lane 0's x, a plane further on)
        v.update(ld_pair_step=v["H"] * v["W"], ld_x1_lim=Tc_in, ld_x1_lo=0, ld_x1_hi=v["W"])
    else:                              # (unused: 0, no descriptor bits in one-lane designs)
        v.update(ld_pair_step=0, ld_x1_lim=0, ld_x1_lo=0, ld_x1_hi=0)


def _address_steps(v, g, cfg):
    """Add a GEMM layer's address fields to its values ``v`` (which hold its ``src``): the
    loader's walk over the feature map, the feeder's over the input tile buffer and the output
    side's (pooled output size and the OR passes' destination steps).

    Parameters
    ----------
    v : dict
        The layer's values (:func:`_tiling`'s, plus ``src``); updated in place.
    g : dict
        The layer's geometry (:func:`_geometry`: the real output size, also for Winograd).
    cfg : AcceleratorConfig
    """
    # loader: FM address of (n, y, x) = src + n·H·W + y·W + x, with y = tile y0 + yi
    # (v, not g: a Winograd layer's loader and walker see 4×4 patches at stride 2)
    H, W, sh, sw = v["H"], v["W"], v["sh"], v["sw"]
    v["y_start"], v["x_start"] = -v["ph"], -v["pw"]
    v["ld_start"] = v["src"] - v["ph"] * W - v["pw"]
    # after the last element (lane 0's) of a row / of a channel (channel pairs: of two)
    pairs = v["ld_pair"] and v["banks_on_rows"]
    v["ld_row_step"] = W - v["ld_xlast"]
    v["ld_chan_step"] = H * W * (2 if pairs else 1) - (v["Tr_in"] - 1) * W - v["ld_xlast"]
    v["ld_tile_col_step"] = v["Tc"] * sw
    v["ld_tile_row_step"] = v["Tr"] * sh * W
    v["ld_blk_step"] = cfg.rows * H * W if v["ld_blocks"] > 1 else 0
    v["tile_y_step"], v["tile_x_step"] = v["Tr"] * sh, v["Tc"] * sw
    if v["banks_on_rows"]:
        # WR stream and the depthwise row mapping's walk: word of (nb, row·sh + ky, col·sw + kx)
        # = nb·chan_words + ... ·Tc_in + ...
        v["fd_row_step"] = sh * v["Tc_in"]
        v["fd_ky_step"] = v["Tc_in"]
        v["fd_chan_step"] = 0
    else:
        # im2col: bank word of (n, row, ky, phase) = (n·Tr_in + row·sh + ky)·row_words + ...
        v["fd_row_step"] = sh * v["row_words"]
        v["fd_ky_step"] = v["row_words"]
        v["fd_chan_step"] = (v["Tr_in"] - v["kh"] + 1) * v["row_words"]
    v["PHW"] = g["PH"] * g["PW"]
    v["oy_lim"], v["ox_lim"] = g["PH"] * g["pk"], g["PW"] * g["pk"]
    v["out_size"] = g["M"] * v["PHW"]
    v["out_mb_step"] = cfg.rows * v["PHW"]
    v["out_tile_step"] = (v["Tr"] >> v["pshift"]) * g["PW"]
