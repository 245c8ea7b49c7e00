"""A SPI NOR flash for simulation: the board top's configuration flash, holding an image the
gateware reads at boot (:class:`cnnforge.boards.spi_flash.SPIFlashReader`).

:class:`SPIFlashModel` runs in the design's clock domain and watches the SPI pins (the master's
clock is a registered signal at half the core clock or slower): mode 0, commands Read Data
(``0x03`` + 24-bit address, then bytes from there, most significant bit first, the address
incrementing) and Release Power-Down (``0xAB``); any other command is ignored until ``cs``
falls. Bytes outside the stored image read as ``0xFF`` (erased flash). ``corrupt`` flips bit 0 of
every byte it sends (a damaged image, for tests). :class:`FlashBoard` puts one on a board core's
flash pins.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.boards.spi_flash import READ, SPI_SIGNATURE

__all__ = ["SPIFlashModel", "FlashBoard"]


class SPIFlashModel(wiring.Component):
    """``image`` (bytes) stored at flash address ``offset``.

    Members
    -------
    spi : In(SPI_SIGNATURE)
        The pins, the master's view flipped (``cipo`` is this model's output).
    corrupt : In(1)
    reads : Out(32)
        Bytes sent so far (for tests).
    """

    def __init__(self, image, offset):
        self.image, self.offset = bytes(image), offset
        super().__init__({"spi": In(SPI_SIGNATURE), "corrupt": In(1),
                          "reads": Out(32)})

    def elaborate(self, platform):
        m = Module()
        n = max(2, len(self.image))
        m.submodules.mem = mem = memory.Memory(shape=8, depth=n, init=list(self.image))
        rd = mem.read_port(domain="comb")
        sck_q = Signal()
        rising, falling = self.spi.sck & ~sck_q, ~self.spi.sck & sck_q
        shift_in = Signal(32)
        bits_in = Signal(range(33))
        addr = Signal(24)
        out = Signal(8)
        out_bits = Signal(range(8))
        reading = Signal()
        m.d.sync += sck_q.eq(self.spi.sck)
        index = addr - self.offset
        in_image = (addr >= self.offset) & (index < len(self.image))
        m.d.comb += [rd.addr.eq(index), self.spi.cipo.eq(out[7])]
        with m.If(~self.spi.cs):
            m.d.sync += [bits_in.eq(0), reading.eq(0), out_bits.eq(0)]
        with m.Elif(rising & ~reading & (bits_in < 32)):
            word = Cat(self.spi.copi, shift_in[:31])
            m.d.sync += [shift_in.eq(word), bits_in.eq(bits_in + 1)]
            with m.If((bits_in == 31) & (word[24:] == READ)):
                m.d.sync += [reading.eq(1), addr.eq(word[:24])]
        with m.Elif(falling & reading):
            with m.If(out_bits == 0):                  # the next byte's first bit
                byte = (rd.data if len(self.image) else 0xFF)
                value = Signal(8)
                m.d.comb += value.eq(byte ^ self.corrupt)
                with m.If(~in_image):
                    m.d.comb += value.eq(0xFF)
                m.d.sync += [out.eq(value), addr.eq(addr + 1), self.reads.eq(self.reads + 1)]
            with m.Else():
                m.d.sync += out.eq(out << 1)
            m.d.sync += out_bits.eq(out_bits + 1)
        return m


class FlashBoard(wiring.Component):
    """The board core with a SPI flash model on its flash pins (the bench's view of an
    iCEBreaker whose flash holds ``image`` at the board's weights offset); ``corrupt`` damages
    every byte the flash sends."""

    def __init__(self, core, image, offset):
        self.core, self.flash = core, SPIFlashModel(image, offset)
        super().__init__({"rx": In(1, init=1), "tx": Out(1), "led_error": Out(1),
                          "corrupt": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core, m.submodules.flash = self.core, self.flash
        wiring.connect(m, self.core.spi, self.flash.spi)
        m.d.comb += [self.core.rx.eq(self.rx), self.tx.eq(self.core.tx),
                     self.led_error.eq(self.core.led_error), self.flash.corrupt.eq(self.corrupt)]
        return m
