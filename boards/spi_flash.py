"""Reading the weight image from the board's SPI flash at boot (the configuration flash, past the
bitstream), so a board with SPRAM weights runs without a host.

:class:`SPIFlashReader` is a SPI master in mode 0 (clock idle low, data out on the falling
edge, sampled on the rising edge) at half the core clock. After reset it wakes the flash
(``0xAB``, release from deep power-down, then the 3 µs tRES1 of the W25Q128JV data sheet,
Winbond, rev. F, §8.2.23 and §9.6), then reads ``length`` bytes from ``offset`` with the Read Data
command (``0x03``, a 24-bit address, §8.2.6) and streams them out, most significant bit first
as the flash sends them. Whether the image is good is the host link's CRC-32 check of those
bytes (:class:`~cnnforge.boards.hostlink.HostLink`).
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SPIFlashReader", "READ", "RELEASE_POWER_DOWN", "SPI_SIGNATURE"]

#: SPI NOR commands (W25Q128JV, also the iCE40 boards' other flashes).
READ, RELEASE_POWER_DOWN = 0x03, 0xAB

SPI_SIGNATURE = wiring.Signature({"sck": Out(1), "cs": Out(1), "copi": Out(1),
                                  "cipo": In(1)})
"""The flash's pins from the master's side (``cs`` active high; the platform's ``cs`` resource
inverts it for the ``CS#`` pin)."""


class SPIFlashReader(wiring.Component):
    """Reads ``length`` bytes from the SPI flash at ``offset`` once after reset.

    Parameters
    ----------
    offset : int
        Byte address in the flash (24 bits).
    length : int
        Bytes to read (at least 1).
    wake_cycles : int
        Core clock cycles ``cs`` stays high after the release-from-power-down command (at least
        tRES1 = 3 µs).

    Members
    -------
    spi : Out(SPI_SIGNATURE)
    o_data : Out(stream.Signature(8, always_ready=True))
        The bytes read, one every 16 cycles.
    first : Out(1)
        Pulses before the first byte (a new image starts).
    busy : Out(1)
        From reset until the last byte is out.
    """

    def __init__(self, offset, length, wake_cycles):
        if not 0 <= offset < 1 << 24 or length < 1:
            self._MustUse__silence = True
            raise ValueError(f"flash read of {length} bytes at 0x{offset:x}: the offset is "
                             "24 bits, the length at least 1")
        self.offset, self.length, self.wake_cycles = offset, length, max(1, wake_cycles)
        super().__init__({"spi": Out(SPI_SIGNATURE),
                          "o_data": Out(stream.Signature(8, always_ready=True)),
                          "first": Out(1), "busy": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        phase = Signal()                      # 0: clock low, next bit on copi; 1: clock high
        tx = Signal(32)                       # bits to send, most significant first
        bits = Signal(range(33))              # bits left to send
        rx = Signal(8)
        rx_bits = Signal(range(8))
        count = Signal(range(self.length + 1))
        wait = Signal(range(self.wake_cycles + 1))
        m.d.comb += [self.spi.copi.eq(tx[31]), self.o_data.payload.eq(Cat(self.spi.cipo, rx))]

        def shift(next_state):
            """One bit a two cycles: clock low then high; at the high cycle's end the next bit
            moves up; after the last, ``next_state``."""
            m.d.comb += self.spi.cs.eq(1)
            m.d.sync += phase.eq(~phase)
            m.d.comb += self.spi.sck.eq(phase)
            with m.If(phase):
                m.d.sync += [tx.eq(tx << 1), bits.eq(bits - 1)]
                with m.If(bits == 1):
                    m.next = next_state

        with m.FSM(name="flash"):
            with m.State("WAKE"):
                m.d.sync += [tx.eq(RELEASE_POWER_DOWN << 24), bits.eq(8)]
                m.next = "SEND_WAKE"
            with m.State("SEND_WAKE"):
                shift("WAIT")
            with m.State("WAIT"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == self.wake_cycles):
                    m.d.sync += [tx.eq(Const(READ << 24 | self.offset, 32)), bits.eq(32)]
                    m.next = "SEND_READ"
            with m.State("SEND_READ"):
                shift("DATA")
                with m.If(phase & (bits == 1)):
                    m.d.comb += self.first.eq(1)
            with m.State("DATA"):
                m.d.comb += [self.spi.cs.eq(1), self.spi.sck.eq(phase)]
                m.d.sync += phase.eq(~phase)
                with m.If(phase):
                    m.d.sync += [rx.eq(Cat(self.spi.cipo, rx)), rx_bits.eq(rx_bits + 1)]
                    with m.If(rx_bits == 7):
                        m.d.comb += self.o_data.valid.eq(1)
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == self.length - 1):
                            m.next = "DONE"
            with m.State("DONE"):
                m.d.sync += self.busy.eq(0)
        return m
