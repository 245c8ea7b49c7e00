"""Memories in the iCE40 UltraPlus's single-port RAM blocks (``SB_SPRAM256KA``: 16,384 words of
16 bits, one access a cycle, not initialized by the bitstream; Lattice FPGA-TN-02022, *iCE40
SPRAM Usage Guide*) and the two the accelerator keeps there: the feature-map slots
(:class:`FeatureMapSlots`) and the weights, written from a byte stream (:class:`WeightLoader`).

Each memory is built from :class:`SPRAM`, which instantiates the blocks for synthesis
(``primitive=True``: yosys does not infer SPRAM from an Amaranth memory, whose zero
initialization ``memory_libmap`` refuses for SPRAM) or :class:`SPRAMBlock`, a model of one
block, for simulation: everything around the blocks is the same RTL either way.
"""

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.rtl.common import bits

__all__ = ["SPRAM", "SPRAMBlock", "FeatureMapSlots", "WeightLoader", "SPRAM_DEPTH",
           "SPRAM_WIDTH"]

#: Words and bits per word of one ``SB_SPRAM256KA``.
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16


class SPRAMBlock(wiring.Component):
    """Behavioral model of one ``SB_SPRAM256KA`` (the ports and the semantics of yosys'
    ``ice40/cells_sim.v``, awake and powered): with ``chipselect``, ``wren`` writes the nibbles
    of ``datain`` that ``maskwren`` enables at ``address``, else ``dataout`` takes the word at
    ``address`` (one cycle later); otherwise ``dataout`` holds. (The block's ``DATAOUT`` is
    undefined after a write; the model holds it.) ``depth`` words only (≤ 16,384), for
    simulation memory."""

    def __init__(self, depth=SPRAM_DEPTH):
        self.depth = depth
        super().__init__({"address": In(14), "datain": In(16), "maskwren": In(4),
                          "wren": In(1), "chipselect": In(1), "dataout": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=16, depth=self.depth, init=[])
        wr, rd = mem.write_port(granularity=4), mem.read_port(transparent_for=())
        m.d.comb += [wr.addr.eq(self.address), rd.addr.eq(self.address),
                     wr.data.eq(self.datain),
                     wr.en.eq(self.maskwren & (self.chipselect & self.wren).replicate(4)),
                     rd.en.eq(self.chipselect & ~self.wren), self.dataout.eq(rd.data)]
        return m


class SPRAM(wiring.Component):
    """A single-port RAM of ``depth`` words × ``width`` bits in ``SB_SPRAM256KA`` blocks:
    ⌈width / 16⌉ blocks side by side, ⌈depth / 16384⌉ deep.

    A cycle either writes (any ``wr_en`` bit high: the enabled bytes of ``wr_data`` at ``addr``)
    or reads ``addr``, whose word is in ``rd_data`` the next cycle. After a write cycle
    ``rd_data`` is undefined (the blocks' ``DATAOUT``).

    Parameters
    ----------
    depth, width : int
    primitive : bool
        Instantiate the blocks (synthesis) or :class:`SPRAMBlock` models of them (simulation):
        the tiling, byte masks and chip selects around them are the same either way.

    Members
    -------
    addr : In(range(depth))
    wr_data : In(width)
    wr_en : In(⌈width / 8⌉)
        Byte enables (byte ``i`` = bits ``8i..8i+7``).
    rd_data : Out(width)
    """

    def __init__(self, depth, width, *, primitive=False):
        self.depth, self.width, self.primitive = max(2, depth), width, primitive
        self.nbytes = -(-width // 8)
        super().__init__({"addr": In(range(self.depth)), "wr_data": In(width),
                          "wr_en": In(self.nbytes), "rd_data": Out(width)})

    @property
    def blocks(self):
        """``SB_SPRAM256KA`` blocks it takes."""
        return -(-self.width // SPRAM_WIDTH) * -(-self.depth // SPRAM_DEPTH)

    def _block(self, m, name, bank, **ports):
        """One block (``ports``: the ``SB_SPRAM256KA`` pins by their lower-case names)."""
        if self.primitive:
            m.submodules[name] = Instance(
                "SB_SPRAM256KA", i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=ports.pop("dataout"),
                **{f"i_{pin.upper()}": value for pin, value in ports.items()})
            return
        m.submodules[name] = block = SPRAMBlock(min(SPRAM_DEPTH, self.depth - bank * SPRAM_DEPTH))
        m.d.comb += [getattr(block, pin).eq(value) for pin, value in ports.items()
                     if pin != "dataout"]
        m.d.comb += ports["dataout"].eq(block.dataout)

    def elaborate(self, platform):
        m = Module()
        tiles = -(-self.width // SPRAM_WIDTH)
        banks = -(-self.depth // SPRAM_DEPTH)
        data = Signal(tiles * SPRAM_WIDTH)
        enables = Signal(2 * tiles)                 # byte enables, padded to whole blocks
        m.d.comb += [data.eq(self.wr_data), enables.eq(self.wr_en)]
        bank = self.addr[14:] if banks > 1 else Const(0)
        bank_q = Signal.like(bank, name="bank_q")
        m.d.sync += bank_q.eq(bank)
        outs = []
        for b in range(banks):
            out = Signal(tiles * SPRAM_WIDTH, name=f"dataout{b}")
            for t in range(tiles):
                byte_en = enables[2 * t:2 * t + 2]
                self._block(m, f"spram{b}_{t}", b, address=self.addr[:14],
                            datain=data[16 * t:16 * t + 16],
                            maskwren=Cat(byte_en[0], byte_en[0], byte_en[1], byte_en[1]),
                            wren=self.wr_en.any(), chipselect=bank == b,
                            dataout=out[16 * t:16 * t + 16])
            outs.append(out)
        m.d.comb += self.rd_data.eq(Array(outs)[bank_q] if banks > 1 else outs[0])
        return m


class FeatureMapSlots(wiring.Component):
    """The feature-map memory as ``slots`` SPRAM blocks, one per slot of ``slot_values`` int8
    values (a power of two; two values a 16-bit word), with the accelerator's three ports: one
    write and two reads (A: tile loader, sequencer, add unit's first input; B: post-processor,
    add unit's second input), each read's value one cycle after its address.

    A slot serves one port a cycle: the write first, then read A, then read B. The compiler
    keeps a layer's accesses in different slots (it reads slots other than the one it writes,
    ``AcceleratorConfig.spram_feature_maps``), so no port waits; a read that loses its slot
    returns another address's value.

    Members
    -------
    wr_addr, rd_a_addr, rd_b_addr : In(addr_width)
    wr_data : In(signed(8))
    wr_en : In(1)
    rd_a_data, rd_b_data : Out(signed(8))
    """

    def __init__(self, slots, slot_values, addr_width, *, primitive=False):
        if slot_values & (slot_values - 1) or slot_values < 2:
            raise ValueError(f"slot of {slot_values} values: give a power of two")
        self.slots, self.slot_values, self.primitive = slots, slot_values, primitive
        super().__init__({
            "wr_addr": In(addr_width), "wr_data": In(signed(8)), "wr_en": In(1),
            "rd_a_addr": In(addr_width), "rd_a_data": Out(signed(8)),
            "rd_b_addr": In(addr_width), "rd_b_data": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        k = bits(self.slot_values - 1)                    # offset bits within a slot

        def slot(addr):
            return addr[k:] if len(addr) > k else Const(0)

        rams = []
        for s in range(self.slots):
            m.submodules[f"slot{s}"] = ram = SPRAM(self.slot_values // 2, SPRAM_WIDTH,
                                                   primitive=self.primitive)
            write = self.wr_en & (slot(self.wr_addr) == s)
            with m.If(write):
                m.d.comb += [ram.addr.eq(self.wr_addr[1:k]),
                             ram.wr_en.eq(Mux(self.wr_addr[0], 0b10, 0b01))]
            with m.Elif(slot(self.rd_a_addr) == s):
                m.d.comb += ram.addr.eq(self.rd_a_addr[1:k])
            with m.Else():
                m.d.comb += ram.addr.eq(self.rd_b_addr[1:k])
            m.d.comb += ram.wr_data.eq(self.wr_data.as_unsigned().replicate(2))
            rams.append(ram.rd_data)
        words = Array(rams)
        for addr, out in ((self.rd_a_addr, self.rd_a_data), (self.rd_b_addr, self.rd_b_data)):
            slot_q, byte_q = Signal(range(max(2, self.slots))), Signal()
            m.d.sync += [slot_q.eq(slot(addr)), byte_q.eq(addr[0])]
            word = words[slot_q] if self.slots > 1 else rams[0]
            m.d.comb += out.eq(word.word_select(byte_q, 8))
        return m


class WeightLoader(wiring.Component):
    """Writes the weight memory from a byte stream: ``words`` words of ``lanes`` weights of
    ``lane_bytes`` bytes each (little endian), word 0 first
    (:func:`~cnnforge.hw.compiler.program.weight_image`).

    Bytes are taken while ``enable`` is high (the engine idle); a word's write comes out of
    registers the cycle after its last byte (the stream's handshake is not in front of the
    SPRAM's address, timing), and ``loaded`` rises with the last word's write; the next byte
    starts a new image at word 0 (``loaded`` falls). ``restart`` starts a new image at once (a
    byte in the same cycle is dropped, and so is a write due the next cycle).

    Members
    -------
    i_weights : In(stream.Signature(8))
    enable, restart : In(1)
    wr_addr : Out(range(words))
    wr_data : Out(lanes · lane_bytes · 8)
    wr_en : Out(1)
        Write ``wr_data`` at ``wr_addr`` this cycle.
    loaded : Out(1)
    """

    def __init__(self, words, lanes, lane_bytes):
        self.words, self.word_bytes = words, lanes * lane_bytes
        super().__init__({
            "i_weights": In(stream.Signature(8)), "enable": In(1), "restart": In(1),
            "wr_addr": Out(range(max(2, words))), "wr_data": Out(8 * self.word_bytes),
            "wr_en": Out(1), "loaded": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self.word_bytes
        byte = Signal(range(max(2, nb)))
        word = Signal.like(self.wr_addr)            # the word the bytes are assembled into
        earlier = Signal(8 * (nb - 1))              # the word's bytes before this one
        m.d.comb += self.i_weights.ready.eq(self.enable)
        m.d.sync += self.wr_en.eq(0)
        with m.If(self.i_weights.valid & self.enable):
            m.d.sync += [earlier.eq(Cat(earlier, self.i_weights.payload)[8:]),
                         byte.eq(byte + 1), self.loaded.eq(0)]
            with m.If(byte == nb - 1):
                m.d.sync += [self.wr_en.eq(1), self.wr_addr.eq(word),
                             self.wr_data.eq(Cat(earlier, self.i_weights.payload)),
                             byte.eq(0), word.eq(word + 1)]
                with m.If(word == self.words - 1):
                    m.d.sync += [word.eq(0), self.loaded.eq(1)]
        with m.If(self.restart):
            m.d.sync += [byte.eq(0), word.eq(0), self.loaded.eq(0), self.wr_en.eq(0)]
        return m
