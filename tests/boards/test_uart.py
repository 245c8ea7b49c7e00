"""UART gateware (``cnnforge.boards.uart``) and the CRC gateware in the Amaranth simulator.

``rtl_uart_rx`` / ``rtl_uart_tx`` wrap the blocks as plain functions (bytes in, bytes out) and are
compared against a reference 8N1 line coder written here.
"""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from cnnforge.boards.hostlink import crc8_next
from cnnforge.boards.protocol import crc8
from cnnforge.boards.uart import UARTRx, UARTTx, uart_divisor


def line_levels(data, bit_cycles, *, stop=1, idle=3):
    """Reference 8N1 coder: the line level for every clock cycle (bit_cycles may be fractional,
    for a transmitter whose rate differs from the receiver's)."""
    bits = [1] * idle
    for byte in data:
        bits += [0] + [(byte >> i) & 1 for i in range(8)] + [stop]
    levels, t = [], 0.0
    for bit in bits:
        t += bit_cycles
        levels += [bit] * (round(t) - len(levels))
    return levels + [1] * (3 * int(bit_cycles))


def rtl_uart_rx(levels, divisor):
    """Drive ``levels`` (one per cycle) into a UARTRx; return (bytes, framing error count)."""
    dut = UARTRx(divisor)
    got, errors = [], [0]

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))
            errors[0] += ctx.get(dut.framing_error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return bytes(got), errors[0]


def rtl_uart_tx(data, divisor):
    """Send ``data`` through a UARTTx; return the line level of every cycle."""
    dut = UARTTx(divisor)
    levels = []

    async def bench(ctx):
        index = 0
        cycles = 0
        while index < len(data) or ctx.get(dut.busy) or cycles < 2:
            if index < len(data):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, data[index])
            else:
                ctx.set(dut.i.valid, 0)
            ready = ctx.get(dut.i.ready)
            levels.append(ctx.get(dut.tx))
            await ctx.tick()
            if index < len(data) and ready:
                index += 1
            cycles += 1
        for _ in range(2 * divisor):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return levels


def decode_levels(levels, divisor):
    """Reference 8N1 decoder sampling each bit at its middle."""
    out, t = [], 0
    while t < len(levels):
        if levels[t] == 0:
            mid = t + divisor // 2
            bits = [levels[mid + k * divisor] for k in range(10) if mid + k * divisor < len(levels)]
            assert len(bits) == 10 and bits[0] == 0 and bits[9] == 1, f"bad frame at cycle {t}"
            out.append(sum(b << i for i, b in enumerate(bits[1:9])))
            t = mid + 9 * divisor
        t += 1
    return bytes(out)


EDGE_BYTES = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0xA5, 0x5A])


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_rx_receives_edge_bytes(divisor):
    got, errors = rtl_uart_rx(line_levels(EDGE_BYTES, divisor), divisor)
    assert got == EDGE_BYTES and errors == 0


@pytest.mark.parametrize("skew", [-0.03, 0.03])
def test_rx_tolerates_rate_error(skew):
    """±3 % between the sender's and the receiver's bit time."""
    data = bytes(random.Random(1).randrange(256) for _ in range(20))
    got, errors = rtl_uart_rx(line_levels(data, 16 * (1 + skew)), 16)
    assert got == data and errors == 0


def test_rx_framing_error_then_recovers():
    """A low stop bit running into a break (the line held low for many frames) is one framing
    error; reception resumes when the line returns high."""
    levels = line_levels(b"\x3c", 8, stop=0)[:-24] + [0] * 200 + line_levels(b"\x42\x43", 8)
    got, errors = rtl_uart_rx(levels, 8)
    assert got == b"\x42\x43" and errors == 1


def test_rx_ignores_glitch():
    levels = [1] * 10 + [0] * 2 + [1] * 30 + line_levels(b"\x99", 8)
    got, errors = rtl_uart_rx(levels, 8)
    assert got == b"\x99" and errors == 0


@pytest.mark.parametrize("divisor", [1, 5, 16])
def test_tx_sends_back_to_back(divisor):
    levels = rtl_uart_tx(EDGE_BYTES, divisor)
    if divisor >= 4:
        assert decode_levels(levels, divisor) == EDGE_BYTES
    # exactly 10 bit times per byte, no idle gap between bytes
    first_start = levels.index(0)
    last_stop = len(levels) - levels[::-1].index(0)     # end of the last zero bit
    assert levels[first_start:].count(0) == sum(10 - bin(b).count("1") - 1
                                                 for b in EDGE_BYTES) * divisor
    assert last_stop - first_start <= 10 * len(EDGE_BYTES) * divisor


def test_loopback_tx_into_rx():
    data = bytes(range(0, 256, 7))
    levels = rtl_uart_tx(data, 9)
    got, errors = rtl_uart_rx([1] * 5 + levels, 9)
    assert got == data and errors == 0


def test_divisor_checks():
    assert uart_divisor(48e6, 115200) == 417
    assert uart_divisor(100e6, 115200) == 868
    assert uart_divisor(12e6, 1_000_000) == 12
    with pytest.raises(ValueError, match="at least 4"):
        uart_divisor(1e6, 500_000)
    with pytest.raises(ValueError, match="off"):
        uart_divisor(10e6, 1_500_000)
    with pytest.raises(ValueError, match="at least 4"):
        UARTRx(3)
    with pytest.raises(ValueError, match="at least 1"):
        UARTTx(0)


def test_crc_gateware_matches_protocol():
    m = Module()
    crc, byte, out = Signal(8), Signal(8), Signal(8)
    m.d.comb += out.eq(crc8_next(crc, byte))
    rng = random.Random(7)
    cases = [(0, 0), (0xFF, 0xFF), (0, 0x80), (0x80, 0)] + [
        (rng.randrange(256), rng.randrange(256)) for _ in range(500)]

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == crc8(bytes([b]), c), (c, b)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
