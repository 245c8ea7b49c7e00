"""Memory planning: where every memory of a compiled design goes on a device, whether it fits,
and, when it does not, which memory overflows and by how much.

Two views of the same rules:

* :func:`plan_memory` (the planner): **every** memory the RTL declares for a
  :class:`~cnnforge.hw.compiler.program.Program` (the accelerator's and the host link's), with
  its ports, whether it is a ROM and whether the bitstream initializes it, placed where
  ``synth`` puts it today; per memory kind (EBR, LUT RAM, SPRAM) the blocks used against the
  device's budget; ``fits`` and, when not, a one-line ``reason``. :func:`check_fits` raises it.
* :func:`memories` (design-space exploration, :mod:`cnnforge.hw.tools.explore`): the subset
  the exploration enumerates before compiling (feature map, weight ROM, input tile banks,
  partial-sum banks, host link image buffer) with yosys' cost-based choice only. It leaves out
  the parameter ROM, which ``hw/rtl/ppu.py`` forces into block RAM (``rom_style="block"``), so
  its block-RAM counts are lower than the plan's by that ROM (5 EBR for the digits network on
  iCE40, 2 on ECP5).

Where memories go (what yosys' ``memory_libmap`` does with the RTL as written; checked on
synthesis runs of the digits network's board core, ``tests/test_memory.py``):

* **Block RAM**, "EBR": iCE40 ``SB_RAM40_4K``, 4 Kbit, one read and one write port, shapes
  256×16, 512×8, 1024×4, 2048×2 (Lattice TN1250, iCE40 Memory Usage Guide; 30 blocks on the
  UP5K, FPGA-DS-02008); ECP5 ``DP16KD`` / ``PDPW16KD``, 18 Kbit, true dual port up to 1024×18
  (16384×1 ... 1024×18) or pseudo dual port 512×36 (Lattice TN1264, ECP5 sysMEM Usage Guide;
  56 blocks on the LFE5U-25F, 208 on the -85F, FPGA-DS-02012). The cheapest shape is used; a
  memory with more read ports than a block has is built once per read port ("copies": the
  feature map, read by the tile loader and the post-processor; the partial-sum and Winograd
  output banks, read to accumulate and to drain). A ROM with two read ports (the add layers'
  rescale tables) is counted as two copies; an ECP5 true-dual-port block could serve both from
  one (up to 18 bits wide), which the planner takes when it is cheaper.
* **LUT RAM** (ECP5 only): ``TRELLIS_DPR16X4``, 16 words × 4 bits, one per PFU of 8 LUT4s
  (the -25F's 194 Kbit of distributed RAM are 3,036 of them, FPGA-DS-02012); RAMs only. yosys
  takes it when it is cheaper than a block RAM (its costs: block RAM 128, LUT RAM 4 per cell);
  the input tile buffer goes there always when ``AcceleratorConfig.lutram_buffers`` (the ECP5
  default of ``synth``) makes its read asynchronous, which block RAM cannot do.
* **Logic** (flip-flops and LUTs): what is cheaper there (logic cost 1 per RAM bit, 1/16 per
  ROM bit): the descriptor ROM, small tables. Not a memory budget (the LUT estimate of
  ``cnnforge explore`` and the synthesis report account for it).
* **SPRAM** (iCE40 UltraPlus: four ``SB_SPRAM256KA``, 16 K × 16 bits = 32 KB each, single
  port, FPGA-DS-02008): yosys does not infer it; ``hw/rtl/spram.py`` instantiates it for the
  feature maps (``spram_feature_maps``: one block per slot, 16-bit words of two values) and the
  weights (``spram_weights``: loaded at run time, since the bitstream does not initialize it),
  which :func:`fit_memories` moves there when block RAM is too small.
* Not planned: the Winograd unit's small group, pass and set FIFOs (3 words each, flip-flops on
  iCE40, at most 8 LUT RAM cells each on ECP5).

Units: ``depth`` in words, ``width`` in bits, ``bytes`` of the contents (one copy), blocks and
LUT RAM cells as counted by nextpnr (``ICESTORM_RAM``, ``DP16KD``, ``TRELLIS_RAMW``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cnnforge.hw.compiler.devices import DEVICES, Device
from cnnforge.hw.compiler.program import ConfigError, addr_width, compile_network, fm_bankable
from cnnforge.hw.models.dataflow import Dataflow
from cnnforge.hw.models.perf import network_model

__all__ = ["MemoryFamily", "MEMORY_FAMILIES", "MemoryUse", "blocks", "memories", "MemorySpec",
           "PlacedMemory", "KindUse", "MemoryPlan", "memory_specs", "plan_memory", "check_fits",
           "with_banked_fm", "design_memories", "fm_read_ports", "feature_map_read_ports",
           "fit_memories", "device_config",
           "EBR", "LUTRAM", "SPRAM", "LOGIC", "PARAM_BITS"]

#: Memory kinds (the plan's ``kind`` of a memory and the keys of its budget).
EBR, LUTRAM, SPRAM, LOGIC = "EBR", "LUT RAM", "SPRAM", "logic"

#: Bits of one parameter-ROM word (``hw/rtl/ppu.py: ChannelParams``: int32 bias, 31-bit M0,
#: 5-bit shift).
PARAM_BITS = 68


@dataclass(frozen=True)
class MemoryFamily:
    """The memory primitives of an FPGA family and yosys' costs for them.

    Members
    -------
    bram_name : str
        The block RAM as the reports call it.
    bram_bits : int
        Bits of one block RAM (4096 iCE40, 18432 ECP5, parity bits included).
    bram_shapes : tuple of (depth, width)
        Block RAM aspect ratios with one read and one write port.
    tdp_shapes : tuple of (depth, width)
        Shapes in which one block serves two read ports (true dual port); empty on iCE40.
    bram_cost : int
        yosys ``memory_libmap``'s cost of one block RAM (``share/ice40/brams.txt``,
        ``share/lattice/brams_16kd.txt``).
    lutram_cost : int or None
        Its cost of one 16×4 LUT RAM (ECP5 ``TRELLIS_DPR16X4``); None: the family has none.
    luts_per_lutram : int
        LUT4s per LUT RAM cell in the device's totals (ECP5: one per PFU of 8 LUT4s).
    spram_shape : tuple of (depth, width) or None
        Single-port RAM block (iCE40 UltraPlus ``SB_SPRAM256KA``: 16384×16).
    """

    bram_name: str
    bram_bits: int
    bram_shapes: tuple
    tdp_shapes: tuple
    bram_cost: int
    lutram_cost: int | None
    luts_per_lutram: int = 0
    spram_shape: tuple | None = None

    @property
    def block_bytes(self):
        """Bytes one block RAM holds, one a word (its deepest shape at least 8 bits wide: 512
        iCE40, 2048 ECP5)."""
        return max(depth for depth, width in self.bram_shapes if width >= 8)

    def lutram_cells(self, device):
        """LUT RAM cells (16×4) of ``device``: 0 on iCE40."""
        return device.luts // self.luts_per_lutram if self.lutram_cost is not None else 0

    def spram_blocks(self, device):
        return device.spram if self.spram_shape else 0


#: Per family (``Device.family``).
MEMORY_FAMILIES = {
    "ice40": MemoryFamily(
        bram_name="EBR (SB_RAM40_4K)", bram_bits=4096,
        bram_shapes=((256, 16), (512, 8), (1024, 4), (2048, 2)), tdp_shapes=(), bram_cost=64,
        lutram_cost=None, spram_shape=(16384, 16)),
    "ecp5": MemoryFamily(
        bram_name="EBR (DP16KD)", bram_bits=18432,
        bram_shapes=((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
        tdp_shapes=((1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
        bram_cost=128, lutram_cost=4, luts_per_lutram=8),
}

#: :attr:`MemoryUse.mapped` of each memory kind.
_MAPPED = {EBR: "block RAM", LUTRAM: "LUT RAM", SPRAM: "SPRAM", LOGIC: "logic"}

#: Bits of one LUT RAM cell (16 words × 4 bits) and of one SPRAM block.
LUTRAM_BITS = 64
SPRAM_BITS = 16384 * 16


def _memory_family(family):
    """A :class:`MemoryFamily` from itself, a family key, a Device or an object that carries
    one as ``memory`` (``cnnforge.hw.tools.explore.Family``)."""
    if isinstance(family, str):
        return MEMORY_FAMILIES[family]
    if isinstance(family, Device):
        return MEMORY_FAMILIES[family.family]
    return getattr(family, "memory", family)


# ------------------------------------------------------------------------------------------------
# yosys' choice for one memory


def blocks(depth, width, family, shapes=None):
    """Block RAMs of one ``depth`` × ``width`` memory: the cheapest of the family's shapes (or of
    ``shapes``)."""
    shapes = shapes or _memory_family(family).bram_shapes
    return min(-(-depth // d) * -(-width // w) for d, w in shapes)


_MAPPING_CACHE = {}


def _mapping(depth, width, family, rom=False):
    family = _memory_family(family)
    key = (id(family), depth, width, rom)
    if key not in _MAPPING_CACHE:
        _MAPPING_CACHE[key] = (family, _mapping_uncached(depth, width, family, rom))
    return _MAPPING_CACHE[key][1]


def _mapping_uncached(depth, width, family, rom=False):
    """Where yosys' ``memory_libmap`` puts one copy of a memory, by its costs: a block RAM
    ``bram_cost`` each, a 16×4 LUT RAM ``lutram_cost`` (RAMs only), logic 1 per RAM bit or 1/16
    per ROM bit (its ``-logic-cost-ram`` / ``-logic-cost-rom`` defaults); block RAM wins ties.
    Returns ``(mapped, blocks, lutrams)``."""
    family = _memory_family(family)
    n = blocks(depth, width, family)
    options = [(n * family.bram_cost, 0, "block RAM", n, 0)]
    if family.lutram_cost is not None and not rom:
        cells = -(-depth // 16) * -(-width // 4)
        options.append((cells * family.lutram_cost, 1, "LUT RAM", 0, cells))
    options.append((depth * width / (16 if rom else 1), 2, "logic", 0, 0))
    _, _, mapped, n, cells = min(options)
    return mapped, n, cells


# ------------------------------------------------------------------------------------------------
# The exploration's view (cnnforge explore)


@dataclass(frozen=True)
class MemoryUse:
    """One memory of a design and where yosys puts it (the exploration's view).

    ``count`` identical instances (banks) of ``depth`` × ``width`` bits, each built ``copies``
    times (once per read port); ``mapped`` is ``"block RAM"``, ``"LUT RAM"`` (ECP5),
    ``"SPRAM"`` (iCE40 UltraPlus) or ``"logic"``; ``blocks`` the block RAMs, ``lutrams`` the
    16×4 LUT RAMs and ``sprams`` the SPRAM blocks over all of them."""

    name: str
    count: int
    depth: int
    width: int
    copies: int
    mapped: str
    blocks: int
    lutrams: int
    sprams: int = 0

    @property
    def bits(self):
        """Bits of one copy of all banks (what :func:`cnnforge.hw.models.perf.buffer_bits`
        counts)."""
        return self.count * self.depth * self.width

    def to_json(self):
        return {"name": self.name, "count": self.count, "depth": self.depth,
                "width": self.width, "copies": self.copies, "mapped": self.mapped,
                "blocks": self.blocks, "lutrams": self.lutrams, "sprams": self.sprams}


def design_memories(family, cfg, **quantities):
    """The memories of a design (the accelerator's and the host link's) that the exploration
    counts, from its quantities (:func:`_shared_specs`) rather than a compiled program, placed
    as :func:`plan_memory` places them: one :class:`MemoryUse` each."""
    family = _memory_family(family)
    out = []
    for spec in _shared_specs(cfg, **quantities):
        placed = _place(spec, family)
        out.append(MemoryUse(spec.name, spec.count, spec.depth, spec.width, placed.copies,
                             _MAPPED[placed.kind], placed.blocks, placed.lutrams,
                             placed.sprams))
    return out


def memories(program, family):
    """The memories :mod:`~cnnforge.hw.tools.explore` counts for ``program``'s board core, one
    :class:`MemoryUse` each: every memory of :func:`plan_memory` but the descriptor ROM (in
    logic but for very long networks) and the Winograd buffers (the exploration runs direct
    convolution), placed the same way.

    Their bits include :func:`cnnforge.hw.models.perf.buffer_bits` (input, weights, fm, psum,
    params) and the host link's image buffer."""
    return design_memories(family, program.config, **_quantities(program))


def _quantities(program):
    """The keyword arguments of :func:`_shared_specs` for ``program``."""
    return dict(
        fm_depth=program.fm_depth, fm_slots=program.fm_slots,
        fm_read_ports=fm_read_ports(program), weight_words=len(program.weights),
        w_width=program.w_width, params=len(program.params), banks=program.input_banks,
        slot_words=program.slot_words, meta_widths=program.meta_widths(),
        stationary=program.stationary, psum_depth=program.psum_depth,
        acc_width=program.acc_width, add_tables=program.add_tables,
        image_size=program.image_size)


def fm_read_ports(program):
    """Read ports of ``program``'s feature map (:func:`feature_map_read_ports`)."""
    return feature_map_read_ports(
        program.pooling, any(layer.values["df"] == Dataflow.ADD for layer in program.layers),
        any(layer.values["ld_pair"] for layer in program.layers))


def feature_map_read_ports(pooling, add, paired):
    """Read ports of the feature map: the tile loader's, and a second for a fused max-pool's
    read-modify-write (``pooling``), an element-wise ``add``'s second input or the loader's
    second lane (``paired``: a layer loads two values a cycle); yosys removes it when none
    exists. With two, block RAM that has one read and one write port a block is built
    twice."""
    return 2 if pooling or add or paired else 1


# ------------------------------------------------------------------------------------------------
# The planner


@dataclass(frozen=True)
class MemorySpec:
    """A memory as the RTL declares it (device independent).

    Members
    -------
    name : str
    source : str
        The RTL file and the submodule name of the memory.
    count : int
        Identical banks.
    depth, width : int
        Words per bank, bits per word.
    read_ports, write_ports : int
    rom : bool
        Contents fixed at elaboration (no write port).
    initialized : bool
        The bitstream must load its contents (a ROM): SPRAM cannot hold it.
    async_read : bool
        Read combinationally (``domain="comb"``): distributed RAM or logic only.
    force_block : bool
        The RTL asks for block RAM (``rom_style="block"``).
    block_without_lutram : bool
        The RTL asks for block RAM on a family without distributed RAM (the iCE40:
        ``ram_style="block"``), a small memory that would otherwise be registers
        (``hw/rtl/common.py``: ``delay_line``, ``BlockRAMFIFO``).
    spram : bool
        The RTL builds it of SPRAM blocks (``hw/rtl/spram.py``: ``SB_SPRAM256KA`` 16K × 16,
        one block per ``count``, ⌈width / 16⌉ × ⌈depth / 16K⌉ blocks each).
    """

    name: str
    source: str
    count: int
    depth: int
    width: int
    read_ports: int = 1
    write_ports: int = 1
    rom: bool = False
    initialized: bool = False
    async_read: bool = False
    force_block: bool = False
    block_without_lutram: bool = False
    spram: bool = False

    @property
    def bits(self):
        """Contents of all banks, one copy."""
        return self.count * self.depth * self.width

    @property
    def bytes(self):
        return -(-self.bits // 8)


@dataclass(frozen=True)
class PlacedMemory:
    """A memory and where it goes: ``kind`` (:data:`EBR`, :data:`LUTRAM`, :data:`SPRAM`,
    :data:`LOGIC`), built ``copies`` times per bank; ``blocks`` EBR, ``lutrams`` 16×4 LUT RAM
    cells and ``sprams`` SPRAM blocks over all banks and copies."""

    spec: MemorySpec
    kind: str
    copies: int
    blocks: int = 0
    lutrams: int = 0
    sprams: int = 0

    def units(self, kind):
        """What it takes of ``kind``: EBR blocks, LUT RAM cells or SPRAM blocks (0 for another
        kind)."""
        if kind != self.kind:
            return 0
        return {EBR: self.blocks, LUTRAM: self.lutrams, SPRAM: self.sprams}.get(kind, 0)

    def to_json(self):
        s = self.spec
        return {"name": s.name, "source": s.source, "count": s.count, "depth": s.depth,
                "width": s.width, "bytes": s.bytes, "read_ports": s.read_ports,
                "write_ports": s.write_ports, "rom": s.rom, "initialized": s.initialized,
                "read": "async" if s.async_read else "sync", "kind": self.kind,
                "copies": self.copies, "blocks": self.blocks, "lutram_cells": self.lutrams,
                "spram_blocks": self.sprams}


@dataclass(frozen=True)
class KindUse:
    """One memory kind of a device: ``used`` of ``total`` units (EBR blocks, LUT RAM cells,
    SPRAM blocks), ``bytes_used`` (contents placed there, copies included) of ``bytes_total``
    (capacity, ECP5 EBR with its parity bits: 2,304 bytes a block)."""

    kind: str
    unit: str
    used: int
    total: int
    bytes_used: int
    bytes_total: int

    @property
    def fits(self):
        return self.used <= self.total

    def to_json(self):
        return {"unit": self.unit, "used": self.used, "total": self.total,
                "bytes_used": self.bytes_used, "bytes_total": self.bytes_total}


@dataclass(frozen=True)
class MemoryPlan:
    """Where a program's memories go on a device (:func:`plan_memory`).

    Members
    -------
    device : Device
    memories : tuple of PlacedMemory
        In the RTL's order.
    kinds : dict of str to KindUse
        :data:`EBR`, :data:`LUTRAM`, :data:`SPRAM`: used against the device's totals.
    logic_bits : int
        Bits of the memories yosys builds in logic (not a memory budget).
    fits : bool
    reason : str or None
        When it does not fit: one line naming the memory that overflows, what it needs and the
        device's budget.
    """

    device: Device
    memories: tuple
    kinds: dict
    logic_bits: int
    fits: bool
    reason: str | None

    def summary(self):
        """One line: ``up5k: EBR 14/30, SPRAM 0/4: fits``."""
        parts = [f"{k} {u.used}/{u.total}" for k, u in self.kinds.items() if u.total or u.used]
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return f"{self.device.key}: {', '.join(parts)}: {verdict}"

    def to_json(self, compact=False):
        """For reports; ``compact``: without the per-memory list."""
        out = {"device": self.device.key, "family": self.device.family, "fits": self.fits,
               "reason": self.reason,
               "kinds": {k: u.to_json() for k, u in self.kinds.items()},
               "logic_bits": self.logic_bits}
        if not compact:
            out["memories"] = [m.to_json() for m in self.memories]
        return out


def memory_specs(program):
    """Every memory the RTL declares for ``program`` (accelerator and host link), one
    :class:`MemorySpec` each, in the order the RTL builds them."""
    cfg = program.config
    modes = {Dataflow(layer.values["df"]) for layer in program.layers}
    desc_bits = sum(width for _, width in program.descriptor_widths().values())
    out = _shared_specs(cfg, **_quantities(program))
    out.insert(3, MemorySpec("descriptor ROM", "hw/rtl/sequencer.py (descriptors)", 1,
                             len(program.layers), desc_bits, write_ports=0, rom=True,
                             initialized=True))
    if Dataflow.WINOGRAD in modes:
        out[-1:-1] = [
            MemorySpec("Winograd input buffer", "hw/rtl/winograd.py (vbuf<c>)", cfg.cols,
                       2 * program.winograd_depth, program.x_width),
            MemorySpec("Winograd output buffer", "hw/rtl/winograd.py (otbuf<c>)", cfg.cols,
                       2 * cfg.rows, 4 * program.y4_width, read_ports=2)]
    return out


def _shared_specs(cfg, *, fm_depth, fm_slots, fm_read_ports, weight_words, w_width, params,
                  banks, slot_words, meta_widths, stationary, psum_depth, acc_width, add_tables,
                  image_size):
    """The memories of a design with configuration ``cfg`` but its descriptor ROM and Winograd
    buffers, as :class:`MemorySpec` in the RTL's order: ``fm_depth`` int8 values in
    ``fm_slots`` slots read by ``fm_read_ports``; ``weight_words`` weight words of ``w_width``
    bits a lane; ``params`` output channels; ``banks`` input tile banks of two halves of
    ``slot_words``; the metadata FIFO's fields (``meta_widths``: ``Program.meta_widths``);
    the partial-sum banks (``stationary``)
    of two halves of ``psum_depth`` ``acc_width``-bit words; the add layers' ``add_tables``;
    the host link's image buffer of ``image_size`` values."""
    weight_depth, weight_width = max(2, weight_words), cfg.lanes * w_width
    rom_banks = -(-weight_depth // cfg.weight_bank_words) if cfg.banked_weights else 1
    out = [
        MemorySpec("feature map", "hw/rtl/spram.py (fm slot<s>)", fm_slots,
                   fm_depth // fm_slots // 2, 16, spram=True)
        if cfg.spram_feature_maps else
        MemorySpec("feature map", "hw/rtl/banked.py (fm.bank<b>)",
                   -(-fm_depth // cfg.fm_bank_words), min(fm_depth, cfg.fm_bank_words), 8,
                   read_ports=fm_read_ports)
        if cfg.banked_fm else
        MemorySpec("feature map", "hw/rtl/accelerator.py (fm)", 1, fm_depth, 8,
                   read_ports=fm_read_ports),
        MemorySpec("weights", "hw/rtl/spram.py (weights)", 1, weight_depth, weight_width,
                   spram=True)
        if cfg.spram_weights else
        MemorySpec("weight ROM", "hw/rtl/banked.py (weights.bank<b>)", rom_banks,
                   min(weight_depth, cfg.weight_bank_words), weight_width, write_ports=0,
                   rom=True, initialized=True)
        if cfg.banked_weights else
        MemorySpec("weight ROM", "hw/rtl/accelerator.py (weights)", 1, weight_depth,
                   weight_width, write_ports=0, rom=True, initialized=True),
        MemorySpec("parameter ROM", "hw/rtl/banked.py (ppu.rom.bank<b>)",
                   -(-max(2, params) // cfg.weight_bank_words),
                   min(max(2, params), cfg.weight_bank_words), PARAM_BITS, write_ports=0,
                   rom=True, initialized=True, force_block=True)
        if cfg.banked_weights else
        MemorySpec("parameter ROM", "hw/rtl/ppu.py (rom)", 1, max(2, params),
                   PARAM_BITS, write_ports=0, rom=True, initialized=True, force_block=True),
        MemorySpec("input tile buffer", "hw/rtl/tile_buffer.py (ibuf<b>)", banks,
                   2 * slot_words, 8, async_read=cfg.lutram_buffers),
        # amaranth's SyncFIFOBuffered of cfg.pass_fifo_depth (4 on the board designs): a word less
        # of storage and its output register; only the partial-sum drain reads the group's
        # rows and cols (yosys drops the bits no one reads)
        MemorySpec("pass metadata FIFO", "amaranth.lib.fifo (hw/rtl/accelerator.py meta)", 1,
                   cfg.pass_fifo_depth - 1,
                   sum(w for name, w in meta_widths.items()
                       if stationary or name not in ("rows", "cols")),
                   block_without_lutram=True),
        MemorySpec("post-processor address delay line",
                   "hw/rtl/common.py (delay_line: hw/rtl/ppu.py addr_delay)", 1, 16,
                   addr_width(fm_depth), block_without_lutram=True),
    ]
    if stationary:
        out.append(MemorySpec("partial-sum buffer", "hw/rtl/drain.py (psum<c>)", cfg.cols,
                              2 * psum_depth, acc_width, read_ports=2))
    if len(add_tables):
        width = max(2, int(abs(add_tables).max()).bit_length() + 1)
        out.append(MemorySpec("add rescale tables", "hw/rtl/add.py (add_tables)", 1,
                              len(add_tables), width, read_ports=2, write_ports=0, rom=True,
                              initialized=True))
    # (on ECP5 cut into banks of a block RAM's bytes, image.bank<b>: the same blocks, one a
    # bank)
    out.append(MemorySpec("host link image buffer",
                          "boards/hostlink.py (image, image.bank<b>)", 1, max(2, image_size), 8))
    return out


def _place(spec, family):
    """Where the RTL's ``spec`` goes on ``family`` (module docstring): a :class:`PlacedMemory`."""
    copies = spec.read_ports if spec.read_ports > 1 else 1
    if spec.spram:
        depth, width = family.spram_shape or (1, 1)
        return PlacedMemory(spec, SPRAM, 1, sprams=spec.count * -(-spec.width // width)
                            * -(-spec.depth // depth))
    if spec.force_block or spec.block_without_lutram and family.lutram_cost is None:
        n = blocks(spec.depth, spec.width, family)
        return PlacedMemory(spec, EBR, copies, spec.count * copies * n)
    if spec.async_read:            # block RAM reads are synchronous
        if family.lutram_cost is not None and not spec.rom:
            cells = -(-spec.depth // 16) * -(-spec.width // 4)
            return PlacedMemory(spec, LUTRAM, copies, lutrams=spec.count * copies * cells)
        return PlacedMemory(spec, LOGIC, copies)
    mapped, n, cells = _mapping(spec.depth, spec.width, family, spec.rom)
    if mapped == "block RAM" and spec.rom and spec.read_ports == 2 and family.tdp_shapes:
        shared = blocks(spec.depth, spec.width, family, family.tdp_shapes)
        if shared <= 2 * n:        # both reads on one true-dual-port block
            return PlacedMemory(spec, EBR, 1, spec.count * shared)
    kind = {"block RAM": EBR, "LUT RAM": LUTRAM, "logic": LOGIC}[mapped]
    return PlacedMemory(spec, kind, copies, spec.count * copies * n,
                        spec.count * copies * cells)


def plan_memory(program, device):
    """Place every memory of ``program``'s board core on ``device``.

    Parameters
    ----------
    program : Program
        A compiled network (:func:`~cnnforge.hw.compiler.program.compile_network`); its
        ``config.lutram_buffers`` decides whether the input tile buffer reads asynchronously.
    device : str or Device
        ``"up5k"``, ``"lfe5u-25f"``, ``"lfe5u-85f"`` or a :class:`Device`.

    Returns
    -------
    MemoryPlan
    """
    if isinstance(device, str):
        device = DEVICES[device]
    family = MEMORY_FAMILIES[device.family]
    placed = tuple(_place(spec, family) for spec in memory_specs(program))

    def used_bytes(kind):
        return sum(-(-m.spec.bits * m.copies // 8) for m in placed if m.kind == kind)
    ebr_unit = f"{family.bram_name.split('(')[-1].rstrip(')')}, {family.bram_bits // 1024} Kbit"
    lut_cells = family.lutram_cells(device)
    kinds = {
        EBR: KindUse(EBR, ebr_unit, sum(m.blocks for m in placed), device.bram,
                     used_bytes(EBR), device.bram * family.bram_bits // 8),
        LUTRAM: KindUse(LUTRAM, "TRELLIS_DPR16X4, 16x4" if lut_cells else "none on iCE40",
                        sum(m.lutrams for m in placed), lut_cells, used_bytes(LUTRAM),
                        lut_cells * LUTRAM_BITS // 8),
        SPRAM: KindUse(SPRAM, "SB_SPRAM256KA, 16Kx16" if family.spram_shape else "none on ECP5",
                       sum(m.sprams for m in placed), family.spram_blocks(device),
                       used_bytes(SPRAM), family.spram_blocks(device) * SPRAM_BITS // 8),
    }
    logic_bits = sum(m.spec.bits * m.copies for m in placed if m.kind == LOGIC)
    over = [u for u in kinds.values() if not u.fits]
    reason = _overflow(placed, over[0], device, family) if over else None
    return MemoryPlan(device, placed, kinds, logic_bits, not over, reason)


def _kb(n):
    return f"{n / 1024:.3g} KB"


def _overflow(placed, use, device, family):
    """The one-line reason: the largest memory of the overflowing kind ``use``, what it needs,
    the device's total and what the other memories there leave of it."""
    kind = use.kind
    inside = sorted((m for m in placed if m.kind == kind), key=lambda m: -m.units(kind))
    mem, others = inside[0], inside[1:]
    need = mem.units(kind)
    unit = {EBR: f"EBR of {family.bram_bits // 1024} Kbit", LUTRAM: "LUT RAM cells of 16x4",
            SPRAM: "SPRAM blocks of 32 KB"}[kind]
    what = f"{mem.spec.bytes:,} bytes"
    if mem.copies > 1:
        what += f" x{mem.copies} read copies"
    text = (f"{mem.spec.name}: {what} need {need} {unit}; {device.key} has {use.total} "
            f"({_kb(use.bytes_total)})")
    if others:
        left = use.total - (use.used - need)
        names = [f"{m.spec.name} ({m.units(kind)})" for m in others[:3]]
        if len(others) > 3:
            names.append(f"{len(others) - 3} more")
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        text += f", {left if left > 0 else 'none'} left after the {listed}"
    return text


def device_config(qnet, device, rows=None, cols=None, **fields):
    """The configuration ``cnnforge synth`` builds for ``qnet`` on ``device``
    (:meth:`~cnnforge.hw.compiler.devices.Device.config`): ``rows`` × ``cols`` when given (as
    asked), else the device's array; where that time-shares the requantizer (``ppu_interval``
    2: the UP5K's 4×3), the array narrowed column by column until it leaves the requantizer its
    four DSP blocks (4×2) is taken instead when the network cannot be compiled on the wide one
    (an element-wise add cannot share the requantizer) or runs fewer cycles on the narrow one by
    the performance model (the digits network: its first layer's nine-beat passes wait for the
    slower drain). The feature map in the device's banks where the network allows
    (:func:`with_banked_fm`).

    Parameters
    ----------
    qnet : QuantizedNetwork
    device : Device
    rows, cols : int, optional
    fields
        Other :class:`~cnnforge.hw.compiler.program.AcceleratorConfig` fields.

    Returns
    -------
    AcceleratorConfig
    """
    wide = device.config(rows, cols, **fields)
    if rows is not None or cols is not None or wide.ppu_interval == 1:
        return with_banked_fm(qnet, device, wide)
    cols = wide.cols
    while cols > 1 and device.ppu_interval(wide.rows, cols) > 1:
        cols -= 1
    narrow = device.config(wide.rows, cols, **fields)
    try:
        wide_cycles = network_model(compile_network(qnet, wide))[1]
    except ConfigError:
        return with_banked_fm(qnet, device, narrow)
    best = wide if wide_cycles <= network_model(compile_network(qnet, narrow))[1] else narrow
    return with_banked_fm(qnet, device, best)


def with_banked_fm(qnet, device, config):
    """``config`` with the feature map in ``device``'s banks (``Device.fm_bank_words``) where
    ``qnet`` allows it (:func:`~cnnforge.hw.compiler.program.fm_bankable`: no fused max-pool,
    no add, whose reads take one cycle), else ``config``; as given where ``config`` sets
    ``fm_bank_words`` already."""
    if not device.fm_bank_words or config.fm_bank_words or not fm_bankable(qnet):
        return config
    return replace(config, fm_bank_words=device.fm_bank_words)


def fit_memories(qnet, config, device, **compile_options):
    """Compile ``qnet`` for ``device``, moving memories into SPRAM when block RAM is too small.

    Tried in order, the first whose plan fits is taken: ``config`` as given; on a device with
    SPRAM, the feature maps in SPRAM (``spram_feature_maps``: no loading step), the weights
    in SPRAM (``spram_weights``: loaded at run time), both.

    Parameters
    ----------
    qnet : QuantizedNetwork
    config : AcceleratorConfig
    device : str or Device
    compile_options
        For :func:`~cnnforge.hw.compiler.program.compile_network` (``tiles``, ``dataflows``,
        ``algorithms``).

    Returns
    -------
    (Program, MemoryPlan)
        The first that fits; when none does, the one that comes nearest (all SPRAM the
        network allows) so its plan's ``reason`` names what still overflows.

    Raises
    ------
    ConfigError, NetworkError
        From compiling ``config`` itself.
    """
    if isinstance(device, str):
        device = DEVICES[device]
    program = compile_network(qnet, config, **compile_options)
    plan = plan_memory(program, device)
    if plan.fits or not device.spram or config.spram_feature_maps or config.spram_weights:
        return program, plan
    refused = None
    for fm, weights in ((True, False), (False, True), (True, True)):
        try:
            candidate = compile_network(qnet, replace(config, spram_feature_maps=fm,
                                                      spram_weights=weights),
                                        **compile_options)
        except ConfigError as exc:                # e.g. a fused pooling with SPRAM maps
            refused = str(exc)
            continue
        program, plan = candidate, plan_memory(candidate, device)
        if plan.fits:
            return program, plan
    if refused:
        plan = replace(plan, reason=f"{plan.reason}; not in SPRAM: {refused}")
    return program, plan


def check_fits(program, device):
    """The plan of ``program`` on ``device`` (:func:`plan_memory`), or the refusal.

    Returns
    -------
    MemoryPlan

    Raises
    ------
    ConfigError
        When a memory kind overflows: the plan's one-line ``reason`` (``cnnforge`` exits 2).
    """
    plan = plan_memory(program, device)
    if not plan.fits:
        raise ConfigError(plan.reason)
    return plan
