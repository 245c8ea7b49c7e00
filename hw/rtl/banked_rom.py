"""A ROM cut into banks whose reads are registered before and after the bank multiplexer."""

from amaranth.hdl import Array, Module, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cnnforge.hw.models.timing import weight_read_latency
from cnnforge.hw.rtl.common import delay

__all__ = ["BankedROM"]


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
        if bank_words < 1 or bank_words & (bank_words - 1) or not len(init):
            self._MustUse__silence = True
            raise ValueError(f"a banked ROM needs words and banks of a power of two words, got "
                             f"{len(init)} words in banks of {bank_words}")
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
