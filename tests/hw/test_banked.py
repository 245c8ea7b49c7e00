"""The banked memory (``cnnforge.hw.rtl.banked.BankedMemory``) in Amaranth's simulator: a ROM's
every word and a RAM's every value on both ports four cycles after the address, for one bank
and many (the last one short), addresses in random order and back to back."""

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import data
from amaranth.sim import Simulator

from cnnforge.hw.rtl.banked import BankedMemory


def run(dut, steps, ports):
    """Drive ``dut``: each step ``(write, reads)`` with ``write`` None or ``(addr, value)`` (a
    RAM) and ``reads`` the ports' addresses; return per step the words seen ``latency`` cycles
    later (lists of int for an array layout)."""
    got = []

    def word(value):
        return [int(v) for v in value] if isinstance(value, data.View) else value

    async def bench(ctx):
        for i in range(len(steps) + dut.latency):
            write, reads = steps[i] if i < len(steps) else (None, (0,) * ports)
            if hasattr(dut, "w_en"):
                ctx.set(dut.w_en, write is not None)
            if write is not None:
                ctx.set(dut.w_addr, write[0])
                ctx.set(dut.w_data, write[1])
            for p, a in enumerate(reads):
                ctx.set(dut.r_addr[p], int(a))
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append(tuple(word(ctx.get(dut.r_data[p])) for p in range(ports)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got[:len(steps)]


@pytest.mark.parametrize("n, bank_words", [(1, 2048), (5, 2048), (7, 1), (10, 4), (64, 8),
                                           (100, 2), (37, 16)])
def test_rom_reads_every_word_four_cycles_later(n, bank_words):
    """A ROM of int8-lane words as the weight ROM's."""
    rng = np.random.default_rng(n * 100 + bank_words)
    words = rng.integers(-128, 128, (n, 3)).tolist()
    words[0] = [-128, 127, -1]
    addrs = np.concatenate([rng.permutation(n), rng.integers(0, n, 2 * n)])
    dut = BankedMemory(data.ArrayLayout(signed(8), 3), n, bank_words, init=words)
    got = run(dut, [(None, (a,)) for a in addrs], 1)
    assert dut.latency == 4 and dut.banks == -(-max(2, n) // bank_words)
    assert got == [(words[a],) for a in addrs]


def test_refuses_empty_memory_and_banks_not_a_power_of_two():
    with pytest.raises(ValueError, match="needs words and banks of a power of two words"):
        BankedMemory(8, 0, 4, init=[])
    for bank_words in (0, 3, 6):
        with pytest.raises(ValueError, match=f"got 9 words in banks of {bank_words}$"):
            BankedMemory(8, 9, bank_words)


@pytest.mark.parametrize("depth, bank_words", [(5, 2048), (10, 4), (37, 8), (64, 16), (90, 2)])
def test_ram_writes_then_reads_on_both_ports(depth, bank_words):
    """Every value written (each bank's first and last included), then read on both ports in
    random orders, four cycles after the address; reads beside writes to other addresses."""
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
    dut = BankedMemory(signed(8), depth, bank_words, read_ports=2)
    got = run(dut, steps, 2)
    assert dut.latency == 4 and dut.banks == -(-depth // bank_words)
    reads = got[depth:2 * depth]
    assert reads == [(values[order[0][i]], values[order[1][i]]) for i in range(depth)]
    assert got[2 * depth:] == [(values[half + a], values[depth - 1 - a]) for a in range(half)]
    again = run(BankedMemory(signed(8), depth, bank_words, read_ports=2),
                steps + [(None, (a, a)) for a in range(half)], 2)
    assert again[-half:] == [(v, v) for v in new]
