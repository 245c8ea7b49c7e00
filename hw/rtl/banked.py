"""A memory cut into banks whose reads are registered after each bank: the weight ROM, the
feature map and the board's image buffer of the ECP5 designs, whose many ``DP16KD`` blocks
otherwise put their 5.8 ns clock-to-out and the multiplexer over them in one cycle."""

from math import ceil, sqrt

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Shape, Signal, Value
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cnnforge.hw.models.timing import read_port_latency
from cnnforge.hw.rtl.common import NO_RW_CHECK, delay

__all__ = ["BankedMemory", "DP16KD_WORDS", "dp16kd_bank", "dp16kd_initvals", "dp16kd_width"]

#: Words of a ``DP16KD`` block in its 9-bit-wide configuration.
DP16KD_WORDS = 2048


class BankedMemory(wiring.Component):
    """``depth`` words of ``shape`` in banks of ``bank_words``, ``read_ports`` read ports (and
    one write port unless ``init`` is given: a ROM); a read's word comes :attr:`latency` = 4
    cycles after its address: the address registered, the banks' synchronous reads, each bank's
    word registered, a multiplexer over each group of :attr:`group_banks` banks registered, then
    the multiplexer over the groups, which its user registers (:func:`read_port_latency`).

    Each bank is ``bank_words`` deep, as deep as a block RAM at its narrowest useful width, so
    the blocks of a bank sit side by side and need no multiplexer; the bank's register follows
    its blocks, the multiplexers have a cycle each (the VWW core's weight ROM, one memory of
    104 blocks 13 deep, had 13.1 ns from the blocks into its data register; its feature map's
    36 banks, multiplexed in one level, 11.5 ns from a block into its bank's register placed
    toward the multiplexer). The read address is registered before it fans out to every bank,
    so the user's address arithmetic is not in front of that route (the VWW core's loader
    address, an adder, then 4.8 ns to a bank: 11.0 ns), and so is a write (the image's bytes
    came from the host link's FIFO across the die: 10.0 ns). A write goes to the bank of its
    address's high bits; a read whose address comes in the cycle of a write's to the same word
    is undefined (``no_rw_check``: the users keep their writes and reads apart), a read a cycle
    later sees the write.

    Parameters
    ----------
    shape : ShapeLike
        A word's shape.
    depth : int
        Words (≥ 1).
    bank_words : int
        Words per bank, a power of two (the bank is the address's high bits).
    init : list or None
        The words of a ROM (no write port), or None.
    read_ports : int
    attrs : dict or None
        Attributes of each bank's memory (``{"rom_style": "block"}``: a small ROM in block RAM,
        not in logic).
    family : ``"ecp5"`` or None
        ``"ecp5"``: each bank is built of ``DP16KD`` instances (:func:`dp16kd_bank`: 2048 × 9
        or 1024 × 18 bits each), the bank's register the block's own output register
        (``REGMODE_B = "OUTREG"``: 0.97 ns clock-to-out in nextpnr's LFE5U-85F timing, against
        5.6-5.8 ns without it, where the fabric register after the block was placed up to
        6.8 ns of routing away; yosys' ECP5 mapping never uses the output register). Needs
        banks of at most 2048 words. None: memories yosys maps (simulation, iCE40).

    Members
    -------
    w_addr, w_data, w_en : In
        The write port (not in a ROM).
    r_addr : In(range(depth)).array(read_ports)
    r_data : Out(shape).array(read_ports)

    Raises
    ------
    ValueError
        No words, banks not a power of two words, or ``DP16KD`` banks over 2048 words.
    """

    def __init__(self, shape, depth, bank_words, *, init=None, read_ports=1, attrs=None,
                 family=None):
        if bank_words < 1 or bank_words & (bank_words - 1) or depth < 1:
            self._MustUse__silence = True
            raise ValueError(f"a banked memory needs words and banks of a power of two words, "
                             f"got {depth} words in banks of {bank_words}")
        if family == "ecp5" and bank_words > DP16KD_WORDS:
            self._MustUse__silence = True
            raise ValueError(f"DP16KD banks hold at most {DP16KD_WORDS} words, not {bank_words}")
        self._family = family
        self._shape, self._depth, self._bank_words = shape, max(2, depth), bank_words
        self._init, self._read_ports = (None if init is None else list(init)), read_ports
        self._attrs = dict(attrs or {})
        aw = range(self._depth)
        write = {} if init is not None else {"w_addr": In(aw), "w_data": In(shape),
                                             "w_en": In(1)}
        super().__init__({**write, "r_addr": In(aw).array(read_ports),
                          "r_data": Out(shape).array(read_ports)})

    @property
    def latency(self):
        """Cycles from ``r_addr`` to ``r_data``: 4."""
        return read_port_latency(True)

    @property
    def banks(self):
        return -(-self._depth // self._bank_words)

    @property
    def group_banks(self):
        """Banks a first-level multiplexer chooses among (a power of two, about the square
        root of :attr:`banks`)."""
        return 1 << ceil_log2(max(1, ceil(sqrt(self.banks))))

    def elaborate(self, platform):
        m = Module()
        words, banks, ports = self._bank_words, self.banks, self._read_ports
        bank_aw = ceil_log2(words) if banks > 1 else len(self.r_addr[0])
        r_addr = [delay(m, self.r_addr[p], 1, f"r_addr{p}_q") for p in range(ports)]
        if self._init is None:
            # the write registered, each bank's enable decoded before the register (the
            # decode's LUT is not in front of the route to a far bank)
            w_addr, w_data = (delay(m, v, 1, f"{n}_q") for v, n in (
                (self.w_addr[:bank_aw], "w_addr"), (self.w_data, "w_data")))
            w_en = [Signal(name=f"bank{b}_we") for b in range(banks)]
            m.d.sync += [we.eq(self.w_en & ((self.w_addr[bank_aw:] == b) if banks > 1 else 1))
                         for b, we in enumerate(w_en)]
        # a ROM's words as bits, once (the DP16KD banks' INITVALs and constant bits)
        bits = (None if self._family != "ecp5" or self._init is None else
                [_word_bits(self._shape, w) for w in self._init])
        varying = _varying(bits, Shape.cast(self._shape).width)
        bank_q = []                     # [bank][port]: each bank's registered read
        for b in range(banks):
            init, write = None, None
            if self._init is None:
                write = (w_addr, w_data, w_en[b])
            else:
                init = (self._init if bits is None else bits)[b * words:(b + 1) * words]
            size = min(words, self._depth - b * words)
            bank_q.append(self._bank(m, b, size, init, write, [a[:bank_aw] for a in r_addr],
                                     varying))
        width = Shape.cast(self._shape).width
        cols = list(range(width)) if varying is None else varying
        for p in range(ports):
            # (only the bits the banks hold pass the multiplexers' registers; a ROM's bits that
            # are the same in every word are constants after them)
            word = self._select(m, [Cat(*(q[p][i] for i in cols)) for q in bank_q],
                                r_addr[p][bank_aw:], p)
            out = Value.cast(self.r_data[p])
            m.d.comb += [out[i].eq(word[k]) for k, i in enumerate(cols)]
            if varying is not None:
                m.d.comb += [out[i].eq(bits[0] >> i & 1) for i in range(width) if i not in cols]
        return m

    def _bank(self, m, b, size, init, write, r_addr, varying):
        """Bank ``b`` of ``size`` words: its words (``init``, a ROM; as bits on ECP5) or its
        write port
        (``write``: address, data, enable), read on each port's registered address
        ``r_addr[p]``; returns each port's registered word (the ``DP16KD``'s output register
        on ECP5, holding the ``varying`` bits)."""
        out = []
        for p, addr in enumerate(r_addr):
            q = Signal(self._shape, name=f"bank{b}_q{p}", reset_less=True)
            out.append(Value.cast(q))
            if self._family == "ecp5":
                dp16kd_bank(m, f"bank{b}_p{p}", Shape.cast(self._shape).width, init, write,
                            addr, q, size, varying)
                continue
            if p == 0:
                mem = memory.Memory(shape=self._shape, depth=max(2, size), init=init or [],
                                    attrs=self._attrs if write is None else
                                    {**NO_RW_CHECK, **self._attrs})
                m.submodules[f"bank{b}"] = mem
                if write is not None:
                    wr = mem.write_port()
                    m.d.comb += [wr.addr.eq(write[0]), wr.data.eq(write[1]),
                                 wr.en.eq(write[2])]
            rd = mem.read_port()
            m.d.comb += rd.addr.eq(addr)
            m.d.sync += q.eq(rd.data)
        return out

    def _select(self, m, words, bank, port):
        """The two multiplexer levels over the banks' registered ``words``: within groups of
        :attr:`group_banks` (registered), then among the groups; ``bank`` is the read's bank
        (its registered address's high bits)."""
        g = self.group_banks
        gb = ceil_log2(g)
        in_group = delay(m, bank[:gb], 2, f"bank_sel{port}") if g > 1 else None
        groups = []
        for k in range(0, len(words), g):
            q = Signal.like(words[0], name=f"group{k // g}_q{port}", reset_less=True)
            part = words[k:k + g]
            m.d.sync += q.eq(Array(part)[in_group] if len(part) > 1 else part[0])
            groups.append(q)
        return Array(groups)[delay(m, bank[gb:], 3, f"group_sel{port}")] \
            if len(groups) > 1 else groups[0]


def _varying(bits, width):
    """The bits of a ROM's words (``bits``, ints) not the same in every word: what its
    ``DP16KD`` banks hold (as yosys drops a ROM's constant bits); None (all) without words."""
    if bits is None:
        return None
    return [i for i in range(width) if len({w >> i & 1 for w in bits}) > 1]


def _word_bits(shape, word):
    """``word`` (an int, a list or a dict, as a memory's ``init`` holds it) as its bits."""
    try:
        layout = data.Layout.cast(shape)
    except TypeError:
        return Const(word, shape).value & ((1 << Shape.cast(shape).width) - 1)
    return layout.const(word).as_bits()


def dp16kd_width(words):
    """The ``DP16KD`` configuration for a bank of ``words`` (at most 2048): 1024 × 18 where it
    fits, else 2048 × 9. Returns the data width, 18 or 9."""
    return 18 if words <= DP16KD_WORDS // 2 else 9


def dp16kd_initvals(words, width=9):
    """A ``DP16KD``'s ``INITVAL_00`` … ``INITVAL_3F`` for ``width``-bit ``words`` (9: at most
    2048, the 2048 × 9 configuration; 18: at most 1024, 1024 × 18): the words side by side from
    bit 0, cut into 1024 rows of 18 bits, 16 rows per parameter each in 20 bits — the layout
    yosys' ECP5 block-RAM mapping writes (``share/lattice/brams_map_16kd.v``, ``init_slice``;
    ``tests/test_dp16kd.py`` compares the two).

    Returns
    -------
    dict of str to int
    """
    flat = 0
    for k, word in enumerate(words):
        flat |= word << (k * width)
    out = {}
    for idx in range(64):
        value = 0
        for i in range(16):
            value |= ((flat >> ((idx * 16 + i) * 18)) & 0x3FFFF) << (20 * i)
        out[f"INITVAL_{idx:02X}"] = value
    return out


def _dp16kd_port(pins, port, addr, width):
    """Port ``port``'s address pins: the word address from AD[3] (9 bits wide) or AD[4] (18:
    AD[1:0] the byte enables of a write, both set)."""
    low = 3 if width == 9 else 4
    for k in range(14):
        if k >= low:
            pins[f"i_AD{port}{k}"] = addr[k - low] if k - low < len(addr) else 0
        else:
            pins[f"i_AD{port}{k}"] = int(width == 18 and k < 2)


def dp16kd_bank(m, name, width, init, write, r_addr, r_data, words, columns=None):
    """One bank of ``words`` words of a :class:`BankedMemory` as ``DP16KD`` blocks side by
    side (Lattice TN1264, *ECP5 and ECP5-5G Memory Usage Guide*: the 1024 × 18 or 2048 × 9
    configuration, :func:`dp16kd_width`; port A writing, port B reading into its output
    register, ``REGMODE_B = "OUTREG"``, clocked always: ``r_data`` is the word at ``r_addr``
    two clock edges after it, as a synchronous read and a register after it). ``width`` the
    word's bits, ``init`` a ROM's words as ints (None: a RAM), ``write`` None or
    ``(addr, data, en)``; ``columns`` the bits
    of a word the bank provides (None: all; the others of ``r_data`` are left undriven), of
    which a ROM bank's blocks hold those not the same in all its words (the others are
    constants)."""
    bw, bits = dp16kd_width(words), init
    r_value = Value.cast(r_data)
    if columns is None:
        columns = list(range(width))
    if bits is not None:        # the bank's own constant bits: constants, not block columns
        same = [i for i in columns if len({w >> i & 1 for w in bits}) == 1]
        m.d.comb += [r_value[i].eq(bits[0] >> i & 1) for i in same]
        columns = [i for i in columns if i not in same]
    for j in range(-(-len(columns) // bw)):
        cols = columns[bw * j:bw * (j + 1)]
        pins = {"i_CLKA": ClockSignal(), "i_CEA": 1, "i_OCEA": 1, "i_RSTA": 0,
                "i_CLKB": ClockSignal(), "i_CEB": 1, "i_OCEB": 1, "i_RSTB": 0, "i_WEB": 0,
                **{f"i_CS{p}{k}": 0 for p in "AB" for k in range(3)},
                **{f"o_DOB{k}": r_value[c] for k, c in enumerate(cols)}}
        _dp16kd_port(pins, "B", r_addr, bw)
        if write is None:
            pins["i_WEA"] = 0
            _dp16kd_port(pins, "A", [], bw)
        else:
            w_addr, w_data, w_en = write
            pins["i_WEA"] = w_en
            _dp16kd_port(pins, "A", w_addr, bw)
            w_value = Value.cast(w_data)
            pins.update({f"i_DIA{k}": w_value[cols[k]] if k < len(cols) else 0
                         for k in range(bw)})
        params = {} if bits is None else {
            f"p_{k}": Const(v, 320) for k, v in dp16kd_initvals(
                [sum((w >> c & 1) << k for k, c in enumerate(cols)) for w in bits], bw).items()}
        m.submodules[f"{name}_{j}"] = Instance(
            "DP16KD", p_DATA_WIDTH_A=bw, p_DATA_WIDTH_B=bw, p_REGMODE_A="NOREG",
            p_REGMODE_B="OUTREG", p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
            p_CSDECODE_A="0b000", p_CSDECODE_B="0b000", p_WRITEMODE_A="NORMAL",
            p_WRITEMODE_B="NORMAL", p_GSR="DISABLED", **params, **pins)
