"""The banked memories (``cnnforge.hw.rtl.banked``) in Amaranth's simulator: the ROM's every
word read three cycles after its address, the RAM's every value two cycles after, on both
ports, for one bank and many (the last one short), addresses in random order and back to
back."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.hdl import signed
from amaranth.sim import Simulator

from cnnforge.hw.rtl.banked import BankedRAM, BankedROM


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
    with pytest.raises(ValueError, match="got 9 words in banks of 6$"):
        BankedRAM(9, 6)
    for bank_words in (0, 3):
        with pytest.raises(ValueError, match=f"got 3 words in banks of {bank_words}$"):
            BankedROM(8, [1, 2, 3], bank_words)


def ram_run(depth, bank_words, steps):
    """Drive a BankedRAM: each step ``(write, reads)`` with ``write`` None or ``(addr, value)``
    and ``reads`` the two ports' addresses; return per step the two values seen ``latency``
    cycles later."""
    dut = BankedRAM(depth, bank_words)
    got = []

    async def bench(ctx):
        for i in range(len(steps) + dut.latency):
            write, reads = steps[i] if i < len(steps) else (None, (0, 0))
            ctx.set(dut.w_en, write is not None)
            if write is not None:
                ctx.set(dut.w_addr, write[0])
                ctx.set(dut.w_data, write[1])
            for p, a in enumerate(reads):
                ctx.set(dut.r_addr[p], a)
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append(tuple(ctx.get(dut.r_data[p]) for p in range(2)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return dut, got[:len(steps)]


@pytest.mark.parametrize("depth, bank_words", [(5, 2048), (10, 4), (37, 8), (64, 16)])
def test_ram_writes_then_reads_on_both_ports(depth, bank_words):
    """Every value written (each bank's first and last included), then read on both ports in
    random orders, two cycles after the address; reads beside writes to other addresses."""
    rng = np.random.default_rng(depth + bank_words)
    values = rng.integers(-128, 128, depth).tolist()
    values[0] = -128
    steps = [((a, values[a]), (0, 0)) for a in range(depth)]
    order = [rng.permutation(depth), rng.permutation(depth)]
    steps += [(None, (int(order[0][i]), int(order[1][i]))) for i in range(depth)]
    # rewrite the first half while the second half is read
    half = depth // 2
    new = rng.integers(-128, 128, half).tolist()
    steps += [((a, new[a]), (half + a, depth - 1 - a)) for a in range(half)]
    dut, got = ram_run(depth, bank_words, steps)
    assert dut.latency == 2 and dut.banks == -(-depth // bank_words)
    reads = got[depth:2 * depth]
    assert reads == [(values[order[0][i]], values[order[1][i]]) for i in range(depth)]
    assert got[2 * depth:] == [(values[half + a], values[depth - 1 - a]) for a in range(half)]
    _, again = ram_run(depth, bank_words, steps + [(None, (a, a)) for a in range(half)])
    assert again[-half:] == [(v, v) for v in new]
