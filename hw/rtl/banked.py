"""A memory cut into banks whose reads are registered after each bank: the weight ROM, the
feature map and the board's image buffer of the ECP5 designs, whose many ``DP16KD`` blocks
otherwise put their 5.8 ns clock-to-out and the multiplexer over them in one cycle."""

from amaranth.hdl import Array, Module, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cnnforge.hw.models.timing import read_port_latency
from cnnforge.hw.rtl.common import NO_RW_CHECK, delay

__all__ = ["BankedMemory"]


class BankedMemory(wiring.Component):
    """``depth`` words of ``shape`` in banks of ``bank_words``, ``read_ports`` read ports (and
    one write port unless ``init`` is given: a ROM); a read's word comes :attr:`latency` = 2
    cycles after its address: the banks' synchronous reads, each bank's word registered, then
    the bank multiplexer, which its user registers (:func:`read_port_latency`).

    Each bank is ``bank_words`` deep, as deep as a block RAM at its narrowest useful width, so
    the blocks of a bank sit side by side and need no multiplexer; the bank's register follows
    its blocks, the multiplexer has the next cycle to itself (the VWW core's weight ROM, one
    memory of 104 blocks 13 deep, had 13.1 ns from the blocks into its data register). A write
    goes to the bank of its address's high bits; a read of a word written in the same or the
    previous cycle is undefined (``no_rw_check``: the users keep their writes and reads apart).

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

    Members
    -------
    w_addr, w_data, w_en : In
        The write port (not in a ROM).
    r_addr : In(range(depth)).array(read_ports)
    r_data : Out(shape).array(read_ports)

    Raises
    ------
    ValueError
        No words, or banks not a power of two words.
    """

    def __init__(self, shape, depth, bank_words, *, init=None, read_ports=1):
        if bank_words < 1 or bank_words & (bank_words - 1) or depth < 1:
            self._MustUse__silence = True
            raise ValueError(f"a banked memory needs words and banks of a power of two words, "
                             f"got {depth} words in banks of {bank_words}")
        self._shape, self._depth, self._bank_words = shape, max(2, depth), bank_words
        self._init, self._read_ports = (None if init is None else list(init)), read_ports
        aw = range(self._depth)
        write = {} if init is not None else {"w_addr": In(aw), "w_data": In(shape),
                                             "w_en": In(1)}
        super().__init__({**write, "r_addr": In(aw).array(read_ports),
                          "r_data": Out(shape).array(read_ports)})

    @property
    def latency(self):
        """Cycles from ``r_addr`` to ``r_data``: 2."""
        return read_port_latency(True)

    @property
    def banks(self):
        return -(-self._depth // self._bank_words)

    def elaborate(self, platform):
        m = Module()
        words, banks, ports = self._bank_words, self.banks, self._read_ports
        bank_aw = ceil_log2(words) if banks > 1 else len(self.r_addr[0])
        data = [[] for _ in range(ports)]
        for b in range(banks):
            size = min(words, self._depth - b * words)
            if self._init is None:
                mem = memory.Memory(shape=self._shape, depth=max(2, size), init=[],
                                    attrs=NO_RW_CHECK)
                wr = mem.write_port()
                hit = (self.w_addr[bank_aw:] == b) if banks > 1 else 1
                m.d.comb += [wr.addr.eq(self.w_addr[:bank_aw]), wr.data.eq(self.w_data),
                             wr.en.eq(self.w_en & hit)]
            else:
                mem = memory.Memory(shape=self._shape, depth=max(2, size),
                                    init=self._init[b * words:(b + 1) * words])
            m.submodules[f"bank{b}"] = mem
            for p in range(ports):
                rd = mem.read_port()
                q = Signal(self._shape, name=f"bank{b}_q{p}")
                m.d.comb += rd.addr.eq(self.r_addr[p][:bank_aw])
                m.d.sync += q.eq(rd.data)
                data[p].append(Value.cast(q))
        for p in range(ports):
            word = data[p][0]
            if banks > 1:
                word = Array(data[p])[delay(m, self.r_addr[p][bank_aw:], 2, f"bank_sel{p}")]
            m.d.comb += self.r_data[p].eq(word)
        return m
