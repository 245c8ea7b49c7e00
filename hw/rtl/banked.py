"""Memories cut into banks whose reads are registered after each bank: the weight ROM
(:class:`BankedROM`) and the feature map (:class:`BankedRAM`) of the ECP5 designs, whose many
``DP16KD`` blocks otherwise put their 5.8 ns clock-to-out and the multiplexer over them in one
cycle."""

from amaranth.hdl import Array, Module, Signal, Value, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cnnforge.hw.models.timing import fm_port_latency, weight_read_latency
from cnnforge.hw.rtl.common import NO_RW_CHECK, delay

__all__ = ["BankedRAM", "BankedROM"]


def _check_banks(component, words, bank_words):
    """Refuse (ValueError) a memory of no words or banks not a power of two words."""
    if bank_words < 1 or bank_words & (bank_words - 1) or words < 1:
        component._MustUse__silence = True
        raise ValueError(f"a banked memory needs words and banks of a power of two words, got "
                         f"{words} words in banks of {bank_words}")


class BankedROM(wiring.Component):
    """``init`` in banks of ``bank_words`` words, read with :attr:`latency` = 3 cycles: the
    banks' synchronous reads, each bank's data registered, the bank multiplexer registered.

    One memory of many block RAMs puts their clock-to-out (5.8 ns on the LFE5U's ``DP16KD``)
    and the multiplexer over them in one cycle (the VWW core's weight ROM: 104 blocks, 13 deep,
    13.1 ns into its data register). Here each bank is ``bank_words`` deep, as deep as a block
    at its narrowest useful width, so the blocks of a bank sit side by side and need no
    multiplexer; the bank's register follows the block, the multiplexer has a cycle of its own.

    Parameters
    ----------
    shape : ShapeLike
        A word's shape (the weight ROM's ``ArrayLayout`` of int8 or wider lanes).
    init : list
        The words (at least one).
    bank_words : int
        Words per bank, a power of two (the bank is the address's high bits).

    Members
    -------
    addr : In(range(len(init)))
    data : Out(shape)
        The word at ``addr`` of three cycles before.
    """

    def __init__(self, shape, init, bank_words):
        _check_banks(self, len(init), bank_words)
        self._shape, self._init, self._bank_words = shape, list(init), bank_words
        depth = max(2, len(init))
        super().__init__({"addr": In(range(depth)), "data": Out(shape)})

    @property
    def latency(self):
        """Cycles from ``addr`` to ``data``: 3 (:func:`weight_read_latency`)."""
        return weight_read_latency(True)

    @property
    def banks(self):
        return -(-len(self._init) // self._bank_words)

    def elaborate(self, platform):
        m = Module()
        words, banks = self._bank_words, self.banks
        bank_aw = ceil_log2(words) if banks > 1 else len(self.addr)
        bank_data = []
        for b in range(banks):
            init = self._init[b * words:(b + 1) * words]
            m.submodules[f"bank{b}"] = rom = memory.Memory(shape=self._shape,
                                                           depth=max(2, len(init)), init=init)
            port = rom.read_port()
            m.d.comb += port.addr.eq(self.addr[:bank_aw])
            q = Signal(self._shape, name=f"bank{b}_q")
            m.d.sync += q.eq(port.data)
            bank_data.append(q)
        if banks > 1:
            bank = delay(m, self.addr[bank_aw:], 2, "bank_sel")
            m.d.sync += self.data.eq(Array(Value.cast(q) for q in bank_data)[bank])
        else:
            m.d.sync += self.data.eq(bank_data[0])
        return m


class BankedRAM(wiring.Component):
    """``depth`` int8 values in banks of ``bank_words``, one write port and ``read_ports`` read
    ports; a read's value comes :attr:`latency` = 2 cycles after its address (the banks'
    synchronous reads, each bank's data registered), the bank multiplexer after the registers
    (its user registers the value: the feature map's readers do).

    The write goes to the bank of its address's high bits in the cycle it is given; reads of
    a value written in the same or the previous cycle are undefined (``no_rw_check``: the
    feature map's writer and readers use different slots).

    Parameters
    ----------
    depth : int
        Values (≥ 1).
    bank_words : int
        Values per bank, a power of two.
    read_ports : int

    Members
    -------
    w_addr, w_data, w_en : In
    r_addr : In(range(depth)).array(read_ports)
    r_data : Out(signed(8)).array(read_ports)
    """

    def __init__(self, depth, bank_words, read_ports=2):
        _check_banks(self, depth, bank_words)
        self._depth, self._bank_words, self._read_ports = max(2, depth), bank_words, read_ports
        aw = range(self._depth)
        super().__init__({"w_addr": In(aw), "w_data": In(signed(8)), "w_en": In(1),
                          "r_addr": In(aw).array(read_ports),
                          "r_data": Out(signed(8)).array(read_ports)})

    @property
    def latency(self):
        """Cycles from ``r_addr`` to ``r_data``: 2 (:func:`fm_port_latency`)."""
        return fm_port_latency(True)

    @property
    def banks(self):
        return -(-self._depth // self._bank_words)

    def elaborate(self, platform):
        m = Module()
        words, banks, ports = self._bank_words, self.banks, self._read_ports
        bank_aw = ceil_log2(words) if banks > 1 else len(self.w_addr)
        data = [[] for _ in range(ports)]
        for b in range(banks):
            mem = memory.Memory(shape=signed(8), depth=max(2, min(words, self._depth - b * words)),
                                init=[], attrs=NO_RW_CHECK)
            m.submodules[f"bank{b}"] = mem
            wr = mem.write_port()
            hit = (self.w_addr[bank_aw:] == b) if banks > 1 else 1
            m.d.comb += [wr.addr.eq(self.w_addr[:bank_aw]), wr.data.eq(self.w_data),
                         wr.en.eq(self.w_en & hit)]
            for p in range(ports):
                rd = mem.read_port()
                q = Signal(signed(8), name=f"bank{b}_q{p}")
                m.d.comb += rd.addr.eq(self.r_addr[p][:bank_aw])
                m.d.sync += q.eq(rd.data)
                data[p].append(q)
        for p in range(ports):
            if banks > 1:
                bank = delay(m, self.r_addr[p][bank_aw:], 2, f"bank_sel{p}")
                m.d.comb += self.r_data[p].eq(Array(data[p])[bank])
            else:
                m.d.comb += self.r_data[p].eq(data[p][0])
        return m
