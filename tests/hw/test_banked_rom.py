"""The banked ROM (``cnnforge.hw.rtl.banked_rom.BankedROM``) in Amaranth's simulator: every
word read three cycles after its address, for one bank and many (the last one short), words of
int8 lanes as the weight ROM's, addresses in random order and back to back."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.hdl import signed
from amaranth.sim import Simulator

from cnnforge.hw.rtl.banked_rom import BankedROM


def read_all(words, bank_words, addrs, lanes=3):
    """Read ``addrs`` one a cycle from a BankedROM of ``words`` (lists of ``lanes`` int8);
    return the words seen ``latency`` cycles after each address."""
    layout = data.ArrayLayout(signed(8), lanes)
    dut = BankedROM(layout, words, bank_words)
    got = []

    async def bench(ctx):
        for i in range(len(addrs) + dut.latency):
            if i < len(addrs):
                ctx.set(dut.addr, int(addrs[i]))
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append([int(v) for v in ctx.get(dut.data)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return dut, got[:len(addrs)]


@pytest.mark.parametrize("n, bank_words", [(1, 2048), (5, 2048), (7, 1), (10, 4), (64, 8),
                                           (37, 16)])
def test_reads_every_word_three_cycles_later(n, bank_words):
    rng = np.random.default_rng(n * 100 + bank_words)
    words = rng.integers(-128, 128, (n, 3)).tolist()
    words[0] = [-128, 127, -1]
    addrs = np.concatenate([rng.permutation(n), rng.integers(0, n, 2 * n)])
    dut, got = read_all(words, bank_words, addrs)
    assert dut.latency == 3 and dut.banks == -(-n // bank_words)
    assert got == [words[a] for a in addrs]


def test_refuses_empty_rom_and_banks_not_a_power_of_two():
    with pytest.raises(ValueError, match="needs words and banks of a power of two words"):
        BankedROM(8, [], 4)
    for bank_words in (0, 3):
        with pytest.raises(ValueError, match=f"got 3 words in banks of {bank_words}$"):
            BankedROM(8, [1, 2, 3], bank_words)
