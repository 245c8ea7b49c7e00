"""Design-space exploration: which accelerator for a network on a given FPGA (``cnnforge explore``).

The space, for one network and one device:

* **array sizes** R × C (default every R, C in 1..16 whose DSP blocks fit the device), each with
  the device's configuration for it (:meth:`~cnnforge.hw.compiler.devices.Device.config`, as
  ``cnnforge synth`` builds it): the input tile buffer kind (LUT RAM on ECP5) and the
  post-processor's interval — where the PEs leave the requantizer fewer than its four DSP
  blocks (the UP5K's 4×3), it is time-shared over two (``ppu_interval`` 2) and every layer
  runs output reuse; a network with an element-wise add (which cannot share it) gets only the
  arrays that leave it four;
* **dataflows per layer**: OR, IR or WR for every dense engine layer (all 3^L combinations when
  the network has at most :data:`MAX_MIX_LAYERS` engine layers; otherwise the uniform choices and
  "auto", the fastest per layer); "auto" is the combination the per-layer minimum picks, so it is
  always among them. A depthwise or average-pooling layer runs OR and an element-wise add its
  ADD schedule in every design, as the compiler runs them (their tilings are still explored);
* **tilings** through **input tile buffer budgets** (powers of two, from the smallest that holds
  every layer's smallest tile to the one at which every layer gets its fastest tiling; budgets
  that change no layer's tiles are skipped): for a budget the tiles of every layer are
  those the compiler's planner picks (the fastest tiling whose input tile fits, larger tiles on
  ties), computed here once per array for all budgets and handed to the compiler as explicit
  ``tiles=`` so that the plan file reproduces them exactly;
* **memory placement** on a device with SPRAM (UP5K): block RAM only, else the feature maps,
  the weights, or both in SPRAM — the first whose block RAM and SPRAM fit, in the order
  :func:`~cnnforge.hw.compiler.memory.fit_memories` tries for ``cnnforge synth`` (the feature
  maps only where the network allows them there: no fused max-pool);
* **Winograd**: not explored — every design is compiled with ``algorithm="direct"`` for every
  layer, and the output and the JSON say so (:data:`WINOGRAD`): the resource model below knows
  neither the Winograd unit's memories (transformed-input buffer, wider weight ROM) nor its
  logic.

Cycles and buffer accesses come from the analytic model
(:func:`cnnforge.hw.models.perf.layer_model`, equal to the RTL counters); nothing is simulated,
so the digits network takes seconds (the keyword-spotting DS-CNN on the UP5K about a minute).
Every design reported (the Pareto set) is compiled for real from its plan
(:func:`~.compiler.compile_network` with the plan's configuration, tiles and dataflows) and its
cycles and memories re-derived from that :class:`~.compiler.Program`, so the table, the JSON and
the plan file cannot drift apart. The plan records the array, the buffer budget, the
post-processor interval, the tile buffer kind and the SPRAM placement.

Resource estimates (per design, against :data:`cnnforge.hw.compiler.devices.DEVICES`), each
rule checked on synthesis runs of the board core (:class:`cnnforge.boards.top.LinkTop` around the
accelerator, yosys ``synth_ice40`` / ``synth_ecp5`` and nextpnr; the runs are listed in
:data:`FAMILIES` ``calibration`` and ``tests/test_explore.py`` checks the model against them):

* **DSP blocks**: on iCE40 one SB_MAC16 per two PEs (the block's 8×8 mode holds two int8
  multiplies, :func:`cnnforge.hw.rtl.common.ice40_product_pair`), on ECP5 one MULT18X18D per PE
  (a MULT18X18D could hold two 9×9 multiplies, but only hand-instantiated MULT9X9D halves would
  use that, which nextpnr-ecp5 does not place) — plus 4 for the post-processor's 32×31-bit
  requantization multiply, which ``hw/rtl/ppu.py`` writes as four 16×16 partial products (one
  SB_MAC16 / MULT18X18D each), 2 when it is time-shared. On ECP5 ``synth_ecp5`` also puts the
  partial-sum drain's address multiply into MULT18X18D: 3 more when a layer is IR or WR.
* **Block RAM and SPRAM**: the memories :func:`~cnnforge.hw.compiler.memory.plan_memory` places
  (:func:`~cnnforge.hw.compiler.memory.design_memories`: the same rules from the design's
  quantities before it is compiled) but the descriptor ROM, which stays in logic but for very
  long networks, and the Winograd buffers (not explored): feature map, weights, parameter ROM,
  input tile banks, pass metadata FIFO, the post-processor's address delay line, partial-sum
  banks, add tables, the host link's image buffer. Each goes where yosys' ``memory_libmap``
  puts it by cost (block RAM: iCE40 SB_RAM40_4K 256×16 … 2048×2, ECP5 DP16KD 512×36 …
  16384×1, the cheapest shape; ECP5 LUT RAM ``TRELLIS_DPR16X4``; logic), or where the RTL
  forces it (the parameter ROM into block RAM, the input tile buffer into LUT RAM on ECP5, the
  SPRAM placements); a memory with two read ports and a write port is built twice. yosys
  slices a few wide memories into blocks of two shapes and uses up to two blocks fewer than
  this count. The memory rules live in :mod:`cnnforge.hw.compiler.memory`.
* **LUTs** (iCE40 logic cells ``ICESTORM_LC``, ECP5 ``TRELLIS_COMB``): a linear model
  (:meth:`Family.luts`) ``base + per_pe·R·C + [any IR/WR layer]·(stationary
  + stationary_per_col·C) + [IR]·ir + [WR]·wr + [time-shared requantizer]·ppu_shared
  + [depthwise layer]·depthwise + per_lutram·(16×4 LUT RAMs)``, its coefficients fitted to
  the calibration runs (iCE40: the digits network at 1×1, 2×2, 2×3, 4×2 and 4×3 OR, 2×2 WR, 1×1
  IR/OR/WR, the keyword-spotting DS-CNN at 2×2 and 4×3; ECP5: digits at 2×2 and 4×4, OR and
  IR/OR/WR, with the ECP5 designs' two loader lanes; a LUT RAM counted as 4 LUTs), within
  2.7 % of every one (ECP5: exact on its four runs). It is an estimate: a
  design near the LUT budget should be confirmed with ``cnnforge synth``.

A network that fits in no design raises :class:`DoesNotFit` (a :class:`~.compiler.ConfigError`:
one line naming the resource, the smallest need and the budget; the command exits with 2).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from rich.console import Console
from rich.table import Table

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import (MEMORY_FAMILIES, MemoryFamily, blocks,
                                         design_memories, feature_map_read_ports, memories)
from cnnforge.hw.compiler.program import (DIRECT, AcceleratorConfig, ConfigError, _add_tables,
                                          _add_values, _allocate, _banks, _engine_layers,
                                          _geometry, _spram_slots, _tiling, _weight_words,
                                          addr_width, compile_network, meta_widths,
                                          reduction_width)
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import layer_model, network_model
from cnnforge.hw.tools.common import NET_HELP, add_calibration_option, atomic_write, load_calibrated

__all__ = ["FAMILIES", "Family", "Design", "Exploration", "DoesNotFit", "explore", "memories",
           "blocks", "pareto_front", "plot_roofline", "add_parser", "MAX_MIX_LAYERS",
           "WINOGRAD"]

#: Networks with at most this many engine layers get every per-layer dataflow combination.
MAX_MIX_LAYERS = 5

#: What the exploration says about Winograd (in the JSON and on the console).
WINOGRAD = {"available": False,
            "reason": "not explored: every design uses direct convolution (the Winograd "
                      "F(2x2,3x3) unit is not part of the explored space; its memories and logic "
                      "are not in the resource model)"}


class DoesNotFit(ConfigError):
    """No design of the space fits the device (the message names the resource, the need and
    the budget)."""


@dataclass(frozen=True)
class Family:
    """Resource rules of an FPGA family (see the module docstring for where they come from).

    Members
    -------
    dsp_name : str
        What the device's multiplier primitive is called.
    memory : MemoryFamily
        The family's block RAM and LUT RAM rules (:mod:`cnnforge.hw.compiler.memory`);
        ``bram_name``, ``bram_shapes``, ``bram_cost`` and ``lutram_cost`` read them.
    pes_per_dsp : int
        PEs (8×8 multiplies) per DSP block: 2 on iCE40 (an SB_MAC16 in 8×8 mode), 1 on ECP5.
    ppu_dsps : int
        DSP blocks of the post-processor's requantization multiply.
    lut_base, lut_per_pe, lut_stationary, lut_stationary_per_col, lut_per_lutram : float
        Linear LUT model: ``base + per_pe·PEs + [any IR/WR layer]·(stationary
        + stationary_per_col·C) + [an IR layer]·ir + [a WR layer]·wr
        + [requantizer time-shared]·ppu_shared + [a depthwise layer]·depthwise
        + per_lutram·(16×4 LUT RAMs)``.
    lut_ir, lut_wr, lut_ppu_shared, lut_depthwise : float
        The terms above (0 where a family's runs do not tell them apart).
    dsp_control, dsp_stationary : int
        DSP blocks of the controllers' address multiplies: always, and with an IR/WR layer.
    calibration : tuple of dict
        The synthesis runs the model was fitted to (array, dataflows, measured LUTs and block
        RAMs, and what the model says).
    """

    dsp_name: str
    memory: MemoryFamily
    pes_per_dsp: int
    ppu_dsps: int
    lut_base: float
    lut_per_pe: float
    lut_stationary: float
    lut_stationary_per_col: float = 0.0
    lut_per_lutram: float = 0.0
    lut_ir: float = 0.0
    lut_wr: float = 0.0
    lut_ppu_shared: float = 0.0
    lut_depthwise: float = 0.0
    dsp_control: int = 0
    dsp_stationary: int = 0
    calibration: tuple = ()

    @property
    def bram_name(self):
        return self.memory.bram_name

    @property
    def bram_shapes(self):
        return self.memory.bram_shapes

    @property
    def bram_cost(self):
        return self.memory.bram_cost

    @property
    def lutram_cost(self):
        return self.memory.lutram_cost

    def luts(self, pes, cols, dataflows, lutrams=0, ppu_interval=1, depthwise=False):
        """Estimated LUTs of a design (the linear model) whose layers run ``dataflows``
        (``"or"``, ``"ir"``, ``"wr"``; an add layer's ``"add"``), with ``ppu_interval`` and
        whether a layer is depthwise."""
        dataflows = set(dataflows)
        extra = (self.lut_stationary + self.lut_stationary_per_col * cols
                 if dataflows & {"ir", "wr"} else 0)
        extra += self.lut_ir * ("ir" in dataflows) + self.lut_wr * ("wr" in dataflows)
        extra += self.lut_ppu_shared * (ppu_interval > 1) + self.lut_depthwise * depthwise
        return int(math.ceil(self.lut_base + self.lut_per_pe * pes + extra
                             + self.lut_per_lutram * lutrams))

    def dsps(self, pes, stationary=False, ppu_interval=1):
        """DSP blocks of a design with ``pes`` PEs (the requantizer's ``ppu_dsps`` shared by
        ``ppu_interval`` cycles: 2 blocks at interval 2)."""
        return (self.pe_dsps(pes) + self.ppu_dsps // ppu_interval + self.dsp_control
                + (self.dsp_stationary if stationary else 0))

    def pe_dsps(self, pes):
        """DSP blocks of ``pes`` PEs' multiplies."""
        return -(-pes // self.pes_per_dsp)


#: Synthesis runs (board core, direct convolution, 4096-byte input buffer, the device's
#: configuration for the array: ``Device.config``; yosys 0.70 / nextpnr 0.11 from YoWASP, seed
#: 1): measured logic cells or LUT4s, DSP blocks and block RAMs. The digits network unless
#: ``net`` says otherwise. iCE40: the requantizer time-shared on the 4×3 array (``ppu_interval``
#: 2), the KWS DS-CNN's maps and weights in SPRAM.
FAMILIES = {
    "ice40": Family(
        dsp_name="SB_MAC16", memory=MEMORY_FAMILIES["ice40"], pes_per_dsp=2, ppu_dsps=4,
        lut_base=2633.0, lut_per_pe=109.05, lut_stationary=0.0, lut_ir=543.1, lut_wr=727.8,
        lut_ppu_shared=103.4, lut_depthwise=934.8,
        calibration=(
            {"array": "1x1", "dataflows": "or,or,or", "luts": 2756, "bram": 16, "dsp": 5},
            {"array": "2x2", "dataflows": "or,or,or", "luts": 3026, "bram": 17, "dsp": 6},
            {"array": "2x3", "dataflows": "or,or,or", "luts": 3325, "bram": 18, "dsp": 7},
            {"array": "4x2", "dataflows": "or,or,or", "luts": 3497, "bram": 17, "dsp": 8},
            {"array": "4x3", "dataflows": "or,or,or", "luts": 4045, "bram": 18, "dsp": 8},
            {"array": "2x2", "dataflows": "wr,wr,wr", "luts": 3797, "bram": 25, "dsp": 6},
            {"array": "1x1", "dataflows": "ir,or,wr", "luts": 4013, "bram": 20, "dsp": 5},
            {"net": "kws_ref_model", "array": "2x2", "dataflows": "or", "luts": 3899,
             "bram": 20, "spram": 3, "dsp": 6},
            {"net": "kws_ref_model", "array": "4x3", "dataflows": "or", "luts": 5085,
             "bram": 22, "spram": 4, "dsp": 8},
        )),
    "ecp5": Family(
        dsp_name="MULT18X18D", memory=MEMORY_FAMILIES["ecp5"], pes_per_dsp=1, ppu_dsps=4,
        lut_base=2838.33, lut_per_pe=99.42, lut_stationary=1102.0, lut_stationary_per_col=294.0,
        lut_per_lutram=4.0, dsp_control=0, dsp_stationary=3,
        calibration=(
            {"array": "2x2", "dataflows": "or,or,or", "luts": 3432, "bram": 5, "dsp": 8},
            {"array": "4x4", "dataflows": "or,or,or", "luts": 4753, "bram": 5, "dsp": 20},
            {"array": "2x2", "dataflows": "ir,or,wr", "luts": 5222, "bram": 5, "dsp": 11},
            {"array": "4x4", "dataflows": "ir,or,wr", "luts": 7227, "bram": 5, "dsp": 23},
        )),
}


@dataclass
class Design:
    """One point of the design space.

    Members
    -------
    rows, cols : int
    buffer_bytes : int
        Input tile buffer budget (``input_buffer_bytes``) the tiles were planned for.
    dataflows : tuple of str
        Per engine layer.
    tiles : tuple of (Tr, Tc)
        Per engine layer.
    cycles : int
        Predicted cycles per image (:func:`cnnforge.hw.models.perf.network_model`).
    ideal_cycles : int
        ``sum(ceil(MACs / PEs))`` over the layers.
    dsp, bram, luts : int
        Estimated resources (module docstring).
    spram : int
        SPRAM blocks (UP5K) of the feature maps and weights placed there.
    memories : list of MemoryUse
    models : list of LayerModel
        Per layer.
    plan : dict or None
        ``Program.plan()`` (filled for the Pareto designs).
    base : AcceleratorConfig
        The device's configuration for the array (post-processor interval, input tile buffer
        kind) with the design's SPRAM placement; :meth:`config` adds the buffer budget.
    """

    rows: int
    cols: int
    buffer_bytes: int
    dataflows: tuple
    tiles: tuple
    cycles: int
    ideal_cycles: int
    dsp: int
    bram: int
    luts: int
    memories: list
    models: list
    plan: dict | None = None
    spram: int = 0
    base: AcceleratorConfig | None = None

    @property
    def pes(self):
        return self.rows * self.cols

    @property
    def objectives(self):
        """What the Pareto set minimises: (cycles, DSP, block RAM, LUTs)."""
        return (self.cycles, self.dsp, self.bram, self.luts)

    @property
    def utilization(self):
        return self.ideal_cycles / self.cycles if self.cycles else 0.0

    def config(self):
        base = self.base or AcceleratorConfig(self.rows, self.cols)
        return replace(base, input_buffer_bytes=self.buffer_bytes)

    def to_json(self, names, types):
        return {
            "array": [self.rows, self.cols], "pes": self.pes,
            "input_buffer_bytes": self.buffer_bytes,
            "dataflows": list(self.dataflows), "algorithm": "direct",
            "cycles": self.cycles, "ideal_cycles": self.ideal_cycles,
            "pe_utilization": round(self.utilization, 4),
            "dsp": self.dsp, "bram": self.bram, "luts_estimate": self.luts,
            "spram": self.spram, "ppu_interval": self.config().ppu_interval,
            "memories": [m.to_json() for m in self.memories],
            "layers": [{"name": n, "type": t, "dataflow": df, "Tr": tr, "Tc": tc,
                        "macs": lm.macs, "ideal_cycles": lm.ideal_cycles,
                        "counters": lm.counters()}
                       for n, t, df, (tr, tc), lm in zip(names, types, self.dataflows,
                                                         self.tiles, self.models)],
            "plan": self.plan,
        }


@dataclass
class Exploration:
    """What :func:`explore` found.

    Members
    -------
    device : Device
    family : Family
    names, types : list of str
        Engine layer names and types.
    pareto : list of Design
        The non-dominated designs within the budget, fastest first (each with its ``plan``).
    evaluated : int
        Designs whose cycles and resources were estimated.
    within_budget : int
        Of those, how many fit the device.
    arrays : list of (R, C)
        Array sizes enumerated (those whose DSP blocks fit).
    budgets : list of int
        Input tile buffer budgets enumerated (bytes), over all arrays.
    mixes : str
        How per-layer dataflows were combined.
    seconds : float
    designs : list of Design
        Every design evaluated (within the budget or not).
    programs : list of Program
        The compiled program of each Pareto design.
    """

    device: object
    family: Family
    names: list
    types: list
    pareto: list
    evaluated: int
    within_budget: int
    arrays: list
    budgets: list
    mixes: str
    seconds: float
    designs: list = field(default_factory=list, repr=False)
    programs: list = field(default_factory=list, repr=False)

    @property
    def best(self):
        """The fastest Pareto design (the fewest DSP, BRAM and LUTs on a tie)."""
        return self.pareto[0]


# ------------------------------------------------------------------------------------------------
# Enumeration


def _tile_candidates(g):
    """The (Tr, Tc) the compiler's planner considers (``compiler._plan_tiles``): whole pooling
    windows, the last tile ragged."""
    pk = g["pk"]
    rows = sorted({min(t, g["OH"]) for t in range(pk, g["OH"] + pk, pk)})
    cols = sorted({min(t, g["OW"]) for t in range(pk, g["OW"] + pk, pk)})
    for tr in rows:
        if tr % pk and tr != g["OH"]:
            continue
        for tc in cols:
            if tc % pk and tc != g["OW"]:
                continue
            yield tr, tc


@dataclass
class _Option:
    need: int          # input tile buffer bytes: slot_words · banks
    key: tuple         # planner order: (cycles, -Tr·Tc, candidate index): its first best
    tile: tuple
    values: dict
    model: object


def _frontier(options):
    """Options that some budget selects: ascending need, strictly better planner key."""
    out = []
    for opt in sorted(options, key=lambda o: (o.need, o.key)):
        if not out or opt.key < out[-1].key:
            out.append(opt)
    return out


def _pick(frontier, budget):
    """The planner's choice for ``budget``: the best option whose input tile fits."""
    best = None
    for opt in frontier:
        if opt.need > budget:
            break
        best = opt
    return best


def _layer_options(groups, cfg):
    """Per engine layer and dataflow: (frontier of tiling options, weight-ROM words). A
    depthwise or average-pooling layer runs OR only, an element-wise add its one ADD schedule
    (no tiles, no weights), as :func:`~cnnforge.hw.compiler.program.compile_network` runs
    them."""
    out = []
    for grp in groups:
        op = grp[0]
        if op.kind == "add":
            v = _add_values(op)
            model = layer_model(v, cfg)
            out.append({Dataflow.ADD: ([_Option(0, (model.cycles, 0, 0), (0, 0), v, model)],
                                       0)})
            continue
        pool = grp[1] if len(grp) > 1 else None
        g = _geometry(op, pool, cfg)
        per_df = {}
        for df in (Dataflow.OR,) if g["dw"] or cfg.ppu_interval > 1 else DIRECT:
            opts = []
            for index, (tr, tc) in enumerate(_tile_candidates(g)):
                v = _tiling(g, tr, tc, cfg, df)
                model = layer_model(v, cfg)
                opts.append(_Option(v["slot_words"] * _banks(cfg, v),
                                    (model.cycles, -tr * tc, index),
                                    (tr, tc), v, model))
            words = len(_weight_words(op, opts[0].values, cfg))
            per_df[df] = (_frontier(opts), words)
        out.append(per_df)
    return out


def _acc_width(groups, picked):
    """The accumulator width the compiler gives a design's program: the widest of the layers'
    sums (:func:`~cnnforge.hw.compiler.program.reduction_width` of their chosen plans' ``K``),
    or an add layer's table values' if wider."""
    bits = 1
    for grp, (opt, _) in zip(groups, picked):
        if grp[0].kind == "add":
            bits = max(bits, int(np.abs(_add_tables(grp[0])).max()).bit_length() + 2)
        else:
            bits = max(bits, reduction_width(grp[0], opt.values["K"]))
    return bits


def _uniform_combos(choice):
    """Without per-layer mixing: each of OR, IR and WR for every layer that can run it (the
    others keep their one dataflow: depthwise OR, add ADD), and the fastest per layer."""
    combos = []
    for df in DIRECT:
        if any(df in ch for ch in choice):
            combos.append(tuple(df if df in ch else next(iter(ch)) for ch in choice))
    combos.append(tuple(min(ch, key=lambda d: (ch[d][0].model.cycles, d)) for ch in choice))
    return combos


def _sequencing_cycles(values, cfg):
    """Cycles :func:`network_model` adds per layer on top of the layer's own (fetch, start,
    next layer), derived from the model itself."""
    probe = SimpleNamespace(config=cfg, layers=[SimpleNamespace(values=values)])
    return network_model(probe)[1] - layer_model(values, cfg).cycles


def _budgets(lo, hi):
    """Powers of two from ``lo`` up to the first one >= ``hi``."""
    b = 1 << max(0, (lo - 1).bit_length())
    out = [b]
    while b < hi:
        b <<= 1
        out.append(b)
    return out


def _array_dsps(family, device, rows, cols):
    """DSP blocks of a ``rows`` × ``cols`` design on ``device`` with output-stationary layers
    (the requantizer time-shared where the device's array needs it,
    :meth:`~cnnforge.hw.compiler.devices.Device.ppu_interval`)."""
    return family.dsps(rows * cols, ppu_interval=device.ppu_interval(rows, cols))


def _arrays(sizes, family, device, has_add):
    """The arrays whose DSP blocks fit ``device``; with an element-wise add (which cannot
    share the requantizer) only those that leave it its four blocks."""
    return [(r, c) for r in sizes for c in sizes
            if _array_dsps(family, device, r, c) <= device.dsps
            and not (has_add and device.ppu_interval(r, c) > 1)]


def _network_quantities(qnet, device, groups, sources):
    """What every design of the network shares (the same in each of its Programs), for
    :func:`_design`: the feature-map slots by liveness as the compiler allocates them, where
    the maps and weights can go, the parameter ROM's words, the add tables, whether a layer
    has a fused max-pool or is an add (the feature map's second read port), whether a layer is
    depthwise, the image size."""
    image_size = int(np.prod(groups[0][0].input_shape))
    slots, n_slots, region = _allocate([int(np.prod(grp[-1].output_shape)) for grp in groups],
                                       sources, image_size)
    adds = [_add_tables(grp[0]) for grp in groups if grp[0].kind == "add"]
    pooling = any(len(grp) > 1 and grp[1].kernel_size[0] > 1 for grp in groups)
    try:                            # the slot size with the maps in SPRAM, where they can go
        spram_region = _spram_slots(groups, sources, slots, region)
    except ConfigError:
        spram_region = None
    return dict(n_slots=n_slots, image_size=image_size,
                depthwise=any(grp[0].kind == "conv" and grp[0].groups > 1 for grp in groups),
                placements=_placements(device, n_slots, region, spram_region),
                params=sum(1 if grp[0].kind == "add" else grp[0].output_shape[0]
                           for grp in groups),
                add_tables=np.concatenate(adds) if adds else np.zeros(0, np.int64),
                fm_uses=(pooling, bool(adds)))


def _placements(device, n_slots, region, spram_region):
    """``(spram_feature_maps, spram_weights, feature-map depth)`` in the order
    :func:`~cnnforge.hw.compiler.memory.fit_memories` tries them: block RAM only, then (on a
    device with SPRAM) the feature maps, the weights, both in SPRAM; the feature maps only
    where the network allows them there (``spram_region``, their slot size there, not None:
    no fused max-pool, one SPRAM block a slot)."""
    out = [(False, False, n_slots * region)]
    if not device.spram:
        return out
    for fm, weights in ((True, False), (False, True), (True, True)):
        if spram_region or not fm:
            out.append((fm, weights, n_slots * (spram_region if fm else region)))
    return out


def explore(qnet, device, *, sizes=range(1, 17), mixes=None):
    """Enumerate the design space of ``qnet`` on ``device`` and return the Pareto-optimal designs
    within its budget.

    Parameters
    ----------
    qnet : QuantizedNetwork
    device : str or cnnforge.boards.synth.Device
        ``"up5k"``, ``"lfe5u-25f"``, ``"lfe5u-85f"`` or a Device (its ``family``, ``luts``,
        ``dsps``, ``bram`` are the budget).
    sizes : iterable of int
        Array rows and columns to try (every pair).
    mixes : bool, optional
        Try every per-layer dataflow combination (default: when the network has at most
        :data:`MAX_MIX_LAYERS` engine layers); otherwise uniform OR/IR/WR and "auto".

    Returns
    -------
    Exploration

    Raises
    ------
    DoesNotFit
        If no design fits (naming the resource, the smallest need and the budget).
    NetworkError
        If the network has something the engine cannot run.
    """
    t0 = time.perf_counter()
    if isinstance(device, str):
        device = DEVICES[device]
    family = FAMILIES[device.family]
    groups, sources = _engine_layers(qnet)
    names = ["+".join(o.name for o in grp) for grp in groups]
    types = ["+".join(o.type for o in grp) for grp in groups]
    nlayers = len(groups)
    if mixes is None:
        mixes = nlayers <= MAX_MIX_LAYERS
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > 64:
        raise ConfigError(f"array sizes {sizes}: give sizes in 1..64")
    has_add = any(grp[0].kind == "add" for grp in groups)
    arrays = _arrays(sizes, family, device, has_add)
    if not arrays:
        r = sizes[0]
        need = _array_dsps(family, device, r, r)
        raise DoesNotFit(
            f"no design fits {device.key}: DSP blocks: needs {need} "
            f"{family.dsp_name} (the smallest design, a {r}x{r} array: "
            f"{family.pe_dsps(r * r)} for the PEs, {need - family.pe_dsps(r * r)} for the "
            f"post-processor and address arithmetic), budget {device.dsps}")

    shared = _network_quantities(qnet, device, groups, sources)

    designs = []
    budgets_seen = set()
    mix_desc = ("every per-layer combination of or/ir/wr" if mixes else
                "uniform or, ir, wr and auto (fastest per layer)")
    for rows, cols in arrays:
        cfg = device.config(rows, cols, algorithm="direct",
                            input_buffer_bytes=max(rows, cols, 1 << 20))
        options = _layer_options(groups, cfg)
        first, _ = next(iter(options[0].values()))
        seq = _sequencing_cycles(first[0].values, cfg)
        lo = max(min(f[0].need for f, _ in opts.values()) for opts in options)
        hi = max(f[-1].need for opts in options for f, _ in opts.values())
        previous = None
        for budget in _budgets(max(lo, cols), hi):
            choice = [{df: (_pick(f, budget), words) for df, (f, words) in opts.items()}
                      for opts in options]
            choice = [{df: c for df, c in ch.items() if c[0] is not None} for ch in choice]
            if any(not ch for ch in choice):
                continue
            signature = tuple(tuple((df, c[0].tile) for df, c in sorted(ch.items()))
                              for ch in choice)
            if signature == previous:
                continue
            previous = signature
            budgets_seen.add(budget)
            combos = (itertools.product(*[sorted(ch) for ch in choice]) if mixes else
                      _uniform_combos(choice))
            seen = set()
            for combo in combos:
                if combo in seen:
                    continue
                seen.add(combo)
                picked = [choice[i][df] for i, df in enumerate(combo)]
                designs.append(_design(family, device, cfg, budget, combo, picked, seq,
                                       _acc_width(groups, picked), **shared))

    fits = [d for d in designs if d.dsp <= device.dsps and d.bram <= device.bram
            and d.luts <= device.luts and d.spram <= device.spram]
    if not fits:
        raise DoesNotFit(_no_fit_message(designs, device, family))
    front = pareto_front(fits)
    programs = []
    for design in front:
        programs.append(_confirm(design, qnet, names, family))
    return Exploration(device=device, family=family, names=names, types=types, pareto=front,
                       evaluated=len(designs), within_budget=len(fits), arrays=arrays,
                       budgets=sorted(budgets_seen), mixes=mix_desc,
                       seconds=time.perf_counter() - t0, designs=designs, programs=programs)


def _design(family, device, cfg, budget, combo, picked, seq, acc_width, *, n_slots,
            placements, depthwise, fm_uses, **quantities):
    """A :class:`Design` from the options ``picked`` per layer: its memories in the first
    placement of ``placements`` (:func:`_placements`) whose block RAM fits ``device``, else in
    the last; ``depthwise``: whether a layer is; ``fm_uses``: (fused max-pool, add) for the
    feature map's read ports, with the loader's second lane where a picked layer pairs;
    ``quantities`` the network's for :func:`design_memories` (``params``, ``add_tables``,
    ``image_size``)."""
    rows, cols = cfg.rows, cfg.cols
    stationary = any(df.stationary for df in combo)
    wr = any(opt.values["banks_on_rows"] for opt, _ in picked)
    psum = [1]
    for df, (opt, _) in zip(combo, picked):
        if df is Dataflow.IR:
            psum.append(opt.values["M"])
        elif df is Dataflow.WR:
            psum.append(opt.values["Tr"] * opt.values["Tc"])
    values = [opt.values for opt, _ in picked]
    for fm, weights, fm_depth in placements:
        base = replace(cfg, spram_feature_maps=fm, spram_weights=weights)
        mems = design_memories(
            family, base, fm_depth=fm_depth, fm_slots=n_slots, w_width=8,
            weight_words=sum(words for _, words in picked), banks=max(cols, rows if wr else 1),
            slot_words=max(v["slot_words"] for v in values),
            meta_widths=meta_widths(values, cfg, addr_width(fm_depth)),
            fm_read_ports=feature_map_read_ports(*fm_uses, any(v["ld_pair"] for v in values)),
            stationary=stationary, psum_depth=max(psum), acc_width=acc_width, **quantities)
        if sum(m.blocks for m in mems) <= device.bram and \
                sum(m.sprams for m in mems) <= device.spram:
            break
    models = [opt.model for opt, _ in picked]
    pes = rows * cols
    return Design(rows=rows, cols=cols, buffer_bytes=budget,
                  dataflows=tuple(df.key for df in combo),
                  tiles=tuple(opt.tile for opt, _ in picked),
                  cycles=sum(m.cycles + seq for m in models),
                  ideal_cycles=sum(m.ideal_cycles for m in models),
                  dsp=family.dsps(pes, stationary, cfg.ppu_interval),
                  bram=sum(m.blocks for m in mems),
                  luts=family.luts(pes, cols, [df.key for df in combo],
                                   sum(m.lutrams for m in mems), cfg.ppu_interval, depthwise),
                  memories=mems, models=models, spram=sum(m.sprams for m in mems), base=base)


def _confirm(design, qnet, names, family):
    """Compile ``design`` for real from its plan and check that the program has the cycles and
    memories the enumeration estimated (they are derived from the same code, so a difference is
    a bug); fills ``design.plan``."""
    program = compile_network(qnet, design.config(), tiles=dict(zip(names, design.tiles)),
                              dataflows=dict(zip(names, design.dataflows)),
                              algorithms={name: "direct" for name in names})
    models, cycles = network_model(program)
    mems = memories(program, family)
    if cycles != design.cycles or mems != design.memories:
        raise RuntimeError(f"explore: design {design.rows}x{design.cols} "
                           f"{','.join(design.dataflows)}: estimated {design.cycles} cycles and "
                           f"{design.memories}, the compiled program has {cycles} and {mems}")
    design.plan = program.plan()
    return program


def pareto_front(designs):
    """The non-dominated designs (minimising :attr:`Design.objectives`), fastest first; of
    designs with equal objectives the first in a simplicity order (one dataflow for every layer,
    smaller buffer budget) is kept."""
    def order(d):
        return (d.objectives, len(set(d.dataflows)), d.buffer_bytes, d.pes, d.dataflows)
    front, kept = [], np.zeros((0, 4), np.int64)
    for d in sorted(designs, key=order):
        obj = np.array(d.objectives, np.int64)
        if len(kept) and np.any(np.all(kept <= obj, axis=1)):
            continue          # dominated by (or equal to) an earlier, no slower, design
        front.append(d)
        kept = np.vstack([kept, obj])
    return front


def _no_fit_message(designs, device, family):
    """One line: the resource no design fits, its smallest need and the budget."""
    rules = [("block RAM", "bram", device.bram, family.bram_name),
             ("SPRAM", "spram", device.spram, "SPRAM blocks of 32 KB"),
             ("LUTs (estimated)", "luts", device.luts, "LUTs"),
             ("DSP blocks", "dsp", device.dsps, family.dsp_name)]
    for label, attr, budget, unit in rules:
        best = min(designs, key=lambda d: (getattr(d, attr), d.cycles))
        need = getattr(best, attr)
        if need > budget:
            return (f"no design fits {device.key}: {label}: needs {need} {unit} (the fewest of "
                    f"any design: {best.rows}x{best.cols} array, {best.buffer_bytes}-byte input "
                    f"buffer, dataflows {','.join(best.dataflows)}), budget {budget}")

    def worst(d):
        return max(d.bram / device.bram, d.spram / max(device.spram, 1e-9),
                   d.luts / device.luts, d.dsp / device.dsps)
    best = min(designs, key=worst)
    over = [(label, getattr(best, attr), budget, unit) for label, attr, budget, unit in rules
            if getattr(best, attr) > budget]
    label, need, budget, unit = over[0]
    return (f"no design fits {device.key}: every design exceeds some budget; the closest "
            f"({best.rows}x{best.cols} array, dataflows {','.join(best.dataflows)}) needs "
            f"{label}: {need} {unit}, budget {budget}")


# ------------------------------------------------------------------------------------------------
# Roofline


def traffic_bytes(model, lanes, acc_width):
    """Bytes moved by one layer's on-chip buffer accesses (the model's counters): input tile
    buffer and feature map 1 byte per access, weight ROM one word of ``lanes`` bytes, output /
    partial-sum buffer ``acc_width / 8`` bytes."""
    return (model.ibuf_reads + model.ibuf_writes + model.fm_reads + model.fm_writes
            + model.weight_reads * lanes
            + (model.obuf_reads + model.obuf_writes) * acc_width / 8)


def peak_bytes_per_cycle(program):
    """The buffer-bandwidth roof: bytes all buffer ports can move in one cycle — the input tile
    banks (one byte read each, one loader write), the weight ROM (one word), the output side
    (OR: a result register read by the drainer and, on average, less than one written;
    IR/WR: C partial-sum reads and writes for accumulation plus one drain read, of
    ``acc_width`` bits), and the feature map (loader read, pooling read, write)."""
    cfg = program.config
    acc = program.acc_width / 8
    stationary = program.stationary
    obuf = (2 * cfg.cols + 1) if stationary else 2
    return program.input_banks + 1 + cfg.lanes + obuf * acc + 3


def plot_roofline(program, path, *, title=""):
    """Draw the roofline of ``program`` (its layers as points; an element-wise add, which makes
    no MACs, has none) to a PNG at ``path``.

    x: operational intensity, MACs per byte of on-chip buffer traffic (:func:`traffic_bytes`);
    y: attained MACs per cycle (model cycles). Roofs: the PE count (compute) and
    :func:`peak_bytes_per_cycle` × intensity (buffer bandwidth)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cfg = program.config
    models, _ = network_model(program)
    peak = cfg.pes
    bw = peak_bytes_per_cycle(program)
    points = []
    for layer, model in zip(program.layers, models):
        if not model.macs:
            continue
        oi = model.macs / traffic_bytes(model, cfg.lanes, program.acc_width)
        points.append((layer, oi, model.macs / model.cycles))
    xs = [p[1] for p in points]
    lo, hi = min(xs + [peak / bw]) / 4, max(xs + [peak / bw]) * 4
    grid = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.loglog(grid, np.minimum(peak, bw * grid), "k-", lw=2, label="roof")
    ax.axhline(peak, color="tab:gray", ls=":", lw=1)
    ax.text(hi / 1.1, peak * 1.08, f"compute: {peak} PEs = {peak} MAC/cycle", ha="right",
            va="bottom", fontsize=8)
    ax.text(lo * 1.15, bw * lo * 3.5, f"buffers: {bw:.0f} B/cycle", fontsize=8)
    markers = {"or": "o", "ir": "s", "wr": "^"}
    for layer, oi, perf in points:
        ax.plot(oi, perf, markers[layer.dataflow], ms=8,
                label=f"{layer.name} {layer.type} ({layer.dataflow.upper()})")
        ax.annotate(layer.name, (oi, perf), textcoords="offset points", xytext=(6, -10),
                    fontsize=8)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 5)))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("operational intensity (MACs / byte of on-chip buffer traffic)")
    ax.set_ylabel("attained MACs / cycle")
    ax.set_ylim(min(p[2] for p in points) / 3, peak * 2.5)
    ax.set_title(title or f"{cfg.rows}x{cfg.cols} array", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return [{"layer": layer.name, "dataflow": layer.dataflow,
             "intensity_macs_per_byte": round(oi, 4), "macs_per_cycle": round(perf, 4)}
            for layer, oi, perf in points], {"compute_macs_per_cycle": peak,
                                             "buffer_bytes_per_cycle": bw}


# ------------------------------------------------------------------------------------------------
# Command line


def _parse_sizes(text):
    """``"1-16"``, ``"1,2,4,8"`` or a mix."""
    out = set()
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out.update(range(int(a), int(b) + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ConfigError(f"--sizes {text!r}: give sizes like 1-16 or 1,2,4,8") from None
    return sorted(out)


def add_parser(sub):
    """Register ``cnnforge explore`` on the ``build_parser`` subparsers."""
    p = sub.add_parser("explore", help="design-space exploration: array sizes, dataflows and "
                       "tile buffers within a device's budget; Pareto table, JSON, plan, roofline")
    p.add_argument("net", metavar="NET", help=NET_HELP)
    add_calibration_option(p)
    p.add_argument("--device", required=True, choices=sorted(DEVICES),
                   help="target FPGA (its DSP, block RAM and LUT budget)")
    p.add_argument("--sizes", default="1-16",
                   help="array rows and columns to try, e.g. 1-16 or 2,4,8 (default 1-16)")
    p.add_argument("--json", help="write every Pareto design (with its plan) to this JSON file")
    p.add_argument("--plot", help="roofline PNG of the fastest design (default "
                   "build/<NET folder>/roofline-<device>.png)")
    p.add_argument("--plan-out", help="plan of the fastest design, for `cnnforge run/sim/verilog "
                   "--plan` (default build/<NET folder>/plan.json)")
    p.set_defaults(func=cmd_explore)
    return p


def cmd_explore(args):
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    qnet = quantize(load_calibrated(args.net, args.calibration))
    result = explore(qnet, args.device, sizes=_parse_sizes(args.sizes))
    dev, fam = result.device, result.family
    out_dir = Path("build") / Path(args.net).resolve().parent.name
    plan_path = Path(args.plan_out or out_dir / "plan.json")
    plot_path = Path(args.plot or out_dir / f"roofline-{dev.key}.png")

    table = Table(title=f"Pareto-optimal designs for {args.net} on {dev.key} ({dev.part}): "
                  f"budget {dev.dsps} {fam.dsp_name}, {dev.bram} EBR, {dev.luts} LUTs")
    spram = ("SPRAM",) if dev.spram else ()
    for col in ("#", "array", "dataflows", "buffer B", "cycles", "util.", "DSP", "BRAM",
                *spram, "LUTs (est.)"):
        table.add_column(col, justify="left" if col in ("array", "dataflows") else "right")
    for i, d in enumerate(result.pareto):
        table.add_row(str(i), f"{d.rows}x{d.cols}", ",".join(d.dataflows),
                      str(d.buffer_bytes), str(d.cycles), f"{d.utilization:.1%}",
                      f"{d.dsp}/{dev.dsps}", f"{d.bram}/{dev.bram}",
                      *([f"{d.spram}/{dev.spram}"] if spram else []), f"{d.luts}/{dev.luts}")
    console.print(table)
    console.print(f"{result.evaluated} designs evaluated ({len(result.arrays)} arrays, "
                  f"buffer budgets {result.budgets[0]}..{result.budgets[-1]} B, "
                  f"{result.mixes}), {result.within_budget} within budget, "
                  f"{len(result.pareto)} Pareto-optimal, {result.seconds:.1f} s")
    console.print(f"Winograd: {WINOGRAD['reason']}")

    best_program = result.programs[0]
    best = result.best
    points, roofs = plot_roofline(
        best_program, plot_path,
        title=f"{args.net} on {dev.key}: {best.rows}x{best.cols}, "
              f"{','.join(best.dataflows)}, {best.cycles} cycles/image")
    plan_text = json.dumps(best.plan, indent=2)
    atomic_write(plan_path, lambda tmp: Path(tmp).write_text(plan_text))
    console.print(f"fastest: #0 {best.rows}x{best.cols} {','.join(best.dataflows)}, "
                  f"{best.cycles} cycles/image; plan: {plan_path} "
                  f"(cnnforge run {args.net} --plan {plan_path})")
    console.print(f"roofline: {plot_path}")
    if args.json:
        report = {
            "network": str(args.net),
            "device": {"key": dev.key, "part": dev.part, "family": dev.family,
                       "luts": dev.luts, "dsps": dev.dsps, "bram": dev.bram,
                       "spram": dev.spram},
            "space": {"arrays": [list(a) for a in result.arrays],
                      "buffer_budgets": result.budgets, "dataflows": result.mixes,
                      "tilings": "the planner's fastest tiling within each buffer budget",
                      "winograd": WINOGRAD},
            "resource_model": {
                "dsp": f"{fam.dsp_name} per {fam.pes_per_dsp} PE(s) + {fam.ppu_dsps} for the "
                       "post-processor's 32x31-bit multiply (four 16x16 partial products; "
                       f"{fam.ppu_dsps // 2} time-shared over two cycles where the array "
                       "leaves fewer, output reuse only)",
                "bram": f"each memory rounded up to {fam.bram_name} shapes "
                        f"{[f'{d}x{w}' for d, w in fam.bram_shapes]}; 2-read-port memories "
                        "built twice",
                "dsp_address_multiplies": {"always": fam.dsp_control,
                                           "with_ir_or_wr": fam.dsp_stationary},
                "luts": {"base": fam.lut_base, "per_pe": fam.lut_per_pe,
                         "stationary": fam.lut_stationary,
                         "stationary_per_col": fam.lut_stationary_per_col,
                         "ir": fam.lut_ir, "wr": fam.lut_wr,
                         "ppu_shared": fam.lut_ppu_shared, "depthwise": fam.lut_depthwise,
                         "per_lutram": fam.lut_per_lutram,
                         "calibration": list(fam.calibration)},
                "spram": "feature maps, then weights, then both moved to SPRAM where block "
                         "RAM is too small (as cnnforge synth places them)" if dev.spram
                         else "none on this device",
            },
            "evaluated": result.evaluated, "within_budget": result.within_budget,
            "seconds": round(result.seconds, 3),
            "pareto": [d.to_json(result.names, result.types) for d in result.pareto],
            "best": 0, "plan_file": str(plan_path), "plot": str(plot_path),
            "roofline": {"design": 0, "roofs": roofs, "layers": points},
        }
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
        console.print(f"report: {args.json}")
    return 0
