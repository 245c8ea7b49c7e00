"""Small pieces every engine unit uses: widths, loop counters, ping-pong flags, the descriptor
fields a unit reads, and the per-cycle events that feed the performance counters."""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, ResetSignal, Signal, signed
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["COUNTERS", "NO_RW_CHECK", "BlockRAMFIFO", "Events", "PingPong", "bits",
           "connect_desc", "counter", "delay", "delay_line", "delay_taps", "desc_layout",
           "descriptor_layout", "end_ahead", "most_of", "one_hot", "ecp5_product", "ice40_product",
           "ice40_product_pair", "product_register"]

#: Per-layer counters sent on the debug stream, in this order (32 bits each).
COUNTERS = ("cycles", "ibuf_reads", "ibuf_writes", "weight_reads", "obuf_reads", "obuf_writes",
            "fm_reads", "fm_writes")


def delay_taps(m, value, depth, name, **like):
    """``value`` through a chain of ``depth`` registers in ``m``'s sync domain (named
    ``<name>_d<i>``, ``Signal.like(value, **like)``): ``[value, <name>_d0, …]``, every stage."""
    taps = [value]
    for i in range(depth):
        reg = Signal.like(value, name=f"{name}_d{i}", **like)
        m.d.sync += reg.eq(taps[-1])
        taps.append(reg)
    return taps


def delay(m, value, depth, name, **like):
    """The last of :func:`delay_taps`: ``value`` ``depth`` cycles later; ``value`` itself for
    depth 0."""
    return delay_taps(m, value, depth, name, **like)[-1]


def delay_line(m, value, depth, name, family=None):
    """``value`` delayed by ``depth`` cycles (2 ≤ ``depth`` ≤ 16) through a 16-word RAM in
    ``m``'s sync domain, not a chain of registers: each cycle writes ``value`` at a wrapping
    pointer and reads the word written ``depth`` − 1 cycles before, so the result is the read
    port's data register. On the iCE40 the RAM is one block RAM (``SB_RAM40_4K``, 16 bits a
    word: one block per 16 bits of ``value``) where the registers would take one logic cell per
    bit and cycle; on the ECP5 yosys builds it from distributed RAM. Starts with zeros; a
    reset does not clear it (its users gate it with a delayed valid bit).

    Parameters
    ----------
    value : Value
    depth : int
    name : str
        The memory's name in ``m``.
    family : ``"ice40"``, ``"ecp5"`` or None
        ``"ice40"`` asks for block RAM (``ram_style``).

    Returns
    -------
    Signal
        Shaped as ``value``.

    Raises
    ------
    ValueError
        ``depth`` outside 2..16.
    """
    if not 2 <= depth <= 16:
        raise ValueError(f"a delay line of {depth} cycles: 2 to 16")
    attrs = {"ram_style": "block"} if family == "ice40" else {}
    m.submodules[name] = ram = memory.Memory(shape=len(value), depth=16, init=[],
                                             attrs={**attrs, **NO_RW_CHECK})
    wr, rd = ram.write_port(), ram.read_port(transparent_for=())
    pointer = Signal(4, name=f"{name}_ptr")
    out = Signal.like(value, name=f"{name}_out")
    m.d.sync += pointer.eq(pointer + 1)
    m.d.comb += [wr.addr.eq(pointer), wr.data.eq(value), wr.en.eq(1),
                 rd.addr.eq(pointer + 1 - depth), out.eq(rd.data)]
    return out


class BlockRAMFIFO(fifo.SyncFIFOBuffered):
    """Amaranth's :class:`~amaranth.lib.fifo.SyncFIFOBuffered` (same ports, same timing) with its
    storage in block RAM on the iCE40 (``family="ice40"``: ``ram_style``), where yosys would
    otherwise build a FIFO of a few words out of logic cells, one per bit and word plus the read
    multiplexer; elsewhere the plain FIFO (the ECP5's distributed RAM is cheap)."""

    def __init__(self, *, width, depth, family=None):
        super().__init__(width=width, depth=depth)
        self._family = family

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if self._family == "ice40":
            # amaranth 0.5's SyncFIFOBuffered names its memory "storage"
            m.submodules.storage.attrs.update(ram_style="block", **NO_RW_CHECK)
        return m


def bits(n):
    """Bits of an unsigned value up to ``n`` (at least 1)."""
    return max(1, int(n).bit_length())


def most_of(program, *names):
    """The largest value of these descriptor fields over the program's layers (what a counter or
    a register must hold: :meth:`~cnnforge.hw.compiler.program.Program.most`)."""
    return program.most(*names)


def counter(top, name=None):
    """A loop counter for values 0..``top``, as narrow as the network allows (shorter
    end-of-loop comparisons)."""
    return Signal(range(max(2, top + 1)), name=name)


def end_ahead(m, last, name):
    """Registered from a descriptor's last loop value ``last`` (held while the layer runs): what
    a loop needs to keep its "at the last value" flag one step ahead of its counter.

    Returns
    -------
    (before_last, single) : (Signal, Signal)
        ``last − 1`` (the counter value whose increment reaches the end: ``flag.eq(counter ==
        before_last)``) and ``last == 0`` (the flag at the loop's first value), both a cycle
        behind ``last``.
    """
    before_last = Signal.like(last, name=f"{name}_before_last")
    single = Signal(name=f"one_{name}")
    m.d.sync += [before_last.eq(last - 1), single.eq(last == 0)]
    return before_last, single


def ecp5_product(m, name, a, b, product, input_registers=False):
    """What ``m.d.sync += product.eq(a * b)`` is, in one ECP5 ``MULT18X18D`` (synthesis): the
    same register in the same cycle as the block's output register, operands at most 18 bits,
    each signed as its shape, the register cleared by the domain's reset unless ``product`` is
    ``reset_less`` (:func:`product_register` chooses it by family).

    yosys' ECP5 flow maps a multiply to a ``MULT18X18D`` without any of its registers
    (``share/lattice/dsp_map_18x18.v``), so the register after it is a fabric flip-flop and
    the route out of the block is in the multiply's cycle (Lattice TN1267, *ECP5 and ECP5-5G
    sysDSP Usage Guide*: MULT18X18D, the output register). With ``input_registers`` the operands
    pass the block's input registers first (``REG_INPUTA``, ``REG_INPUTB``, same clock, enable and
    reset): ``product`` is then ``a · b`` of two cycles before, and the route into the block has
    a cycle of its own."""
    sign_a, sign_b = a.shape().signed, b.shape().signed
    a18, b18 = Signal(signed(18) if sign_a else 18), Signal(signed(18) if sign_b else 18)
    p36 = Signal(36)
    m.d.comb += [a18.eq(a), b18.eq(b), product.eq(p36)]
    pins = {"i_CLK0": ClockSignal(), "i_CE0": 1,
            "i_RST0": 0 if product.reset_less else ResetSignal(),
            "i_SIGNEDA": int(sign_a), "i_SIGNEDB": int(sign_b), "i_SOURCEA": 0, "i_SOURCEB": 0}
    for i in range(18):
        pins.update({f"i_A{i}": a18[i], f"i_B{i}": b18[i], f"i_C{i}": 0})
    pins.update({f"o_P{i}": p36[i] for i in range(36)})
    pins.update({f"i_{k}{i}": 0 for k in ("CLK", "CE", "RST") for i in (1, 2, 3)})
    registers = ("OUTPUT", "INPUTA", "INPUTB") if input_registers else ("OUTPUT",)
    for reg in registers:
        pins.update({f"p_REG_{reg}_CLK": "CLK0", f"p_REG_{reg}_CE": "CE0",
                     f"p_REG_{reg}_RST": "RST0"})
    m.submodules[name] = Instance("MULT18X18D", p_RESETMODE="SYNC", p_GSR="DISABLED", **pins)


#: SB_MAC16 inputs a multiply leaves unused (holds, resets, loads, carries): tied to 0.
_SB_MAC16_UNUSED = ("AHOLD", "BHOLD", "CHOLD", "DHOLD", "IRSTTOP", "IRSTBOT", "ORSTTOP", "ORSTBOT",
                    "OLOADTOP", "OLOADBOT", "ADDSUBTOP", "ADDSUBBOT", "OHOLDTOP", "OHOLDBOT", "CI",
                    "ACCUMCI", "SIGNEXTIN")


def _sb_mac16(m, name, a16, b16, o32, **params):
    """An ``SB_MAC16`` named ``name``: A, B (16 bits), O (32 bits), the clock, ``params``."""
    m.submodules[name] = Instance("SB_MAC16", i_CLK=ClockSignal(), i_CE=1, i_A=a16, i_B=b16,
                                  i_C=0, i_D=0, o_O=o32,
                                  **{f"i_{pin}": 0 for pin in _SB_MAC16_UNUSED},
                                  **{f"p_{k}": v for k, v in params.items()})


def ice40_product(m, name, a, b, product):
    """What ``m.d.sync += product.eq(a * b)`` is, in one iCE40 ``SB_MAC16`` in its 16×16 mode
    (synthesis): operands at most 16 bits, each signed as its shape, the 32-bit product in the
    block's pipeline register (``PIPELINE_16x16_MULT_REG2``, outputs ``H``; Lattice TN1295,
    *DSP Function Usage Guide for iCE40 Devices*). The register is not reset: one cycle into a
    reset it holds the product of the reset operands, as the plain register would.

    yosys' iCE40 DSP mapper (``ice40_dsp``, ``synth_ice40 -dsp``) knows only the 16×16 mode and
    rebuilds every ``SB_MAC16`` it meets as one, so cnnforge instantiates the iCE40 blocks itself
    and synthesizes without ``-dsp`` (:data:`cnnforge.boards.synth.SYNTH_ICE40`)."""
    a16 = Signal(signed(16) if a.shape().signed else 16)
    b16 = Signal(signed(16) if b.shape().signed else 16)
    o32 = Signal(32)
    m.d.comb += [a16.eq(a), b16.eq(b), product.eq(o32)]
    _sb_mac16(m, name, a16, b16, o32, A_SIGNED=int(a.shape().signed),
              B_SIGNED=int(b.shape().signed), PIPELINE_16x16_MULT_REG2=1, TOPOUTPUT_SELECT=3,
              BOTOUTPUT_SELECT=3)


def ice40_product_pair(m, name, a0, b0, p0, a1, b1, p1):
    """What ``m.d.sync += [p0.eq(a0 * b0), p1.eq(a1 * b1)]`` is, in one iCE40 ``SB_MAC16`` in
    its 8×8 mode (synthesis): two independent signed 8×8 multiplies on the low and the high
    bytes of its A and B inputs, each product in the block's own 8×8 output register (Lattice
    TN1295; the parameters as yosys' cell model ``share/ice40/cells_sim.v`` reads them:
    ``A_SIGNED``/``B_SIGNED`` extend both bytes' signs in 8×8 mode). Operands signed 8-bit,
    products signed 16-bit; not reset, as :func:`ice40_product`."""
    for v in (a0, b0, a1, b1):
        if v.shape() != signed(8):
            raise ValueError(f"an SB_MAC16 8x8 product pair takes signed 8-bit operands, not "
                             f"{v.shape()}")
    a16, b16, o32 = Signal(16), Signal(16), Signal(32)
    m.d.comb += [a16.eq(Cat(a0, a1)), b16.eq(Cat(b0, b1)),
                 p0.eq(o32[:16].as_signed()), p1.eq(o32[16:].as_signed())]
    _sb_mac16(m, name, a16, b16, o32, MODE_8x8=1, A_SIGNED=1, B_SIGNED=1, TOP_8x8_MULT_REG=1,
              BOT_8x8_MULT_REG=1, TOPOUTPUT_SELECT=2, BOTOUTPUT_SELECT=2)


def product_register(m, family, name, a, b, product, input_registers=False):
    """``m.d.sync += product.eq(a * b)``, in a DSP block's own register when synthesizing for
    ``family`` (:func:`ecp5_product`, :func:`ice40_product`; None: the plain multiply, for
    simulation). With ``input_registers`` the operands are registered first (the product a cycle
    later): in the ``MULT18X18D``'s input registers on ECP5, fabric registers otherwise, reset as
    ``product`` is."""
    if family == "ecp5":
        ecp5_product(m, name, a, b, product, input_registers)
        return
    if input_registers:
        a, b = (delay(m, v, 1, f"{name}_{n}", reset_less=product.reset_less)
                for v, n in ((a, "a"), (b, "b")))
    if family == "ice40":
        ice40_product(m, name, a, b, product)
    else:
        m.d.sync += product.eq(a * b)


#: Attributes of a memory whose reads never need the value of a write to the same address in
#: the same cycle (the writer and the readers are kept apart, or the reader forwards the write
#: itself). yosys' ``no_rw_check``: collisions may read anything, so no read-first logic is
#: built around the block RAM (:func:`cnnforge.boards.synth.undefined_collisions` applies it
#: to the synchronous read ports amaranth emits).
NO_RW_CHECK = {"no_rw_check": 1}


def descriptor_layout(program):
    """The layer descriptor of ``program``: every field of
    :data:`~cnnforge.hw.compiler.program.DESCRIPTOR_FIELDS` as wide as the network's values need
    (signed where a value is negative)."""
    return data.StructLayout({name: signed(width) if is_signed else width
                              for name, (is_signed, width) in
                              program.descriptor_widths().items()})


def desc_layout(full, names):
    """The descriptor fields ``names`` of the network's descriptor layout ``full``: what one unit
    receives (:func:`connect_desc`)."""
    return data.StructLayout({name: full[name].shape for name in names})


def connect_desc(m, desc, port):
    """Drive a unit's descriptor port ``port`` from the running layer's descriptor ``desc``."""
    for name, _ in port.shape():
        m.d.comb += port[name].eq(desc[name])


class Events:
    """Per-cycle increments of the performance counters, collected where they happen.

    ``count(name, amount)`` adds ``amount`` in the cycles where the enclosing ``m.If`` conditions
    hold; :meth:`drive` sums a unit's increments onto its ``events`` port, whose layout
    :meth:`layout` declares from the most each counter can grow by in one cycle.
    """

    def __init__(self, m):
        self._m = m
        self._incs = {}

    @staticmethod
    def layout(most):
        """``{counter: largest increment in one cycle}`` → the ``events`` port's layout."""
        return data.StructLayout({name: range(amount + 1) for name, amount in most.items()})

    def count(self, name, amount=1):
        inc = Signal(range(amount + 1), name=f"inc_{name}_{len(self._incs.get(name, []))}")
        self._m.d.comb += inc.eq(amount)
        self._incs.setdefault(name, []).append(inc)

    def drive(self, port):
        for name, _ in port.shape():
            incs = self._incs.get(name, [])
            if incs:
                self._m.d.comb += port[name].eq(sum(incs))


class PingPong(wiring.Component):
    """Full flags of the two halves of a double buffer.

    Members
    -------
    set : In(2)
        One-hot halves the producer has filled this cycle.
    clr : In(2)
        One-hot halves the consumer has released this cycle.
    full : Out(2)
        Registered: ``(full | set) & ~clr`` of the previous cycle.
    """

    set: In(2)
    clr: In(2)
    full: Out(2)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.full.eq((self.full | self.set) & ~self.clr)
        return m


def one_hot(half):
    """``0b10`` for ping-pong half 1, ``0b01`` for half 0 (``half`` a 1-bit value)."""
    return Mux(half, 0b10, 0b01)
