"""The SPI flash reader (``boards/spi_flash.py``) against the flash model (``sim/spi_flash.py``)
in Amaranth's simulator: the wake-up command, then the image's bytes in order from the
offset, ``first`` before them, ``busy`` until the last; the pins' protocol checked cycle by
cycle (mode 0: ``copi`` changes only while the clock is low, ``cs`` low between the two
commands for the wake-up time)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from cnnforge.boards.spi_flash import RELEASE_POWER_DOWN, SPIFlashReader
from cnnforge.sim.spi_flash import SPIFlashModel


def read_flash(image, offset, length, flash_offset=None, wake=5, corrupt=False):
    """Bytes the reader streams out, the cycles of its ``first`` pulses and the command bytes
    the pins carried (decoded here from ``copi`` on the clock's rising edges)."""
    m = Module()
    m.submodules.reader = reader = SPIFlashReader(offset, length, wake)
    m.submodules.flash = flash = SPIFlashModel(image, offset if flash_offset is None
                                               else flash_offset)
    wiring.connect(m, reader.spi, flash.spi)
    m.d.comb += flash.corrupt.eq(corrupt)
    out, firsts, commands = [], [], []

    async def bench(ctx):
        sck_q, copi_q, bits, cs_low = 0, 0, [], 0
        for t in range(20 * (length + 40) + 4 * wake):
            sck, copi, cs = ctx.get(reader.spi.sck), ctx.get(reader.spi.copi), \
                ctx.get(reader.spi.cs)
            if sck and not sck_q:
                bits.append(copi)
            if sck_q and sck == sck_q and copi != copi_q:
                raise AssertionError(f"cycle {t}: copi changed while the clock is high")
            if not cs:
                cs_low += 1
                if bits:
                    commands.append(bits)
                bits = []
            sck_q, copi_q = sck, copi
            if ctx.get(reader.first):
                firsts.append(t)
            if ctx.get(reader.o_data.valid):
                out.append(ctx.get(reader.o_data.payload))
            await ctx.tick()
            if not ctx.get(reader.busy):
                break
        commands.append(bits)
        return cs_low

    result = {}

    async def run(ctx):
        result["cs_low"] = await bench(ctx)

    sim = Simulator(m)
    sim.add_clock(1e-7)
    sim.add_testbench(run)
    sim.run()
    return bytes(out), firsts, commands, result["cs_low"]


@pytest.mark.parametrize("offset, length", [(0x100000, 37), (5, 1)])
def test_reads_the_image(offset, length):
    rng = np.random.default_rng(length)
    image = rng.integers(0, 256, length).astype(np.uint8).tobytes()
    out, firsts, commands, cs_low = read_flash(image, offset, length)
    assert out == image and len(firsts) == 1
    wake = int("".join(map(str, commands[0])), 2)
    assert wake == RELEASE_POWER_DOWN and len(commands[0]) == 8
    read = int("".join(map(str, commands[1][:32])), 2)
    assert read == (0x03 << 24) | offset
    assert cs_low >= 5                            # tRES1 between the commands


def test_erased_and_corrupt_images():
    """Past the stored image the flash reads 0xFF (an erased flash: no image written); a
    corrupted image differs in every byte's bit 0."""
    image = bytes(range(10, 30))
    out, *_ = read_flash(image, 0x1000, 20, flash_offset=0x1008)
    assert out == b"\xff" * 8 + image[:12]
    out, *_ = read_flash(image, 0x1000, 20, corrupt=True)
    assert out == bytes(b ^ 1 for b in image)


def test_parameters():
    with pytest.raises(ValueError, match="24 bits"):
        SPIFlashReader(1 << 24, 4, 1)
    with pytest.raises(ValueError, match="at least 1"):
        SPIFlashReader(0, 0, 1)
