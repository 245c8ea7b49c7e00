"""iCEBreaker (iCE40 UP5K): 12 MHz oscillator -> PLL -> core clock; UART on the FTDI's second
channel; green LED = waiting for a frame, red LED = a frame was rejected; on the break-off PMOD,
LED1 (red) = busy, LED2 (green) = a result was sent.

The UP5K has 8 SB_MAC16 DSP blocks: two PEs share each of six (8×8 mode), a 4×3 PE array of 12
int8 MACs a cycle, and the post-processor's 32×31-bit multiply time-shares the other two (a
result every other cycle, ``AcceleratorConfig.ppu_interval``). The KWS core fits with an
output-stationary-only engine (docs/boards.md, "Two int8 products per SB_MAC16").

``python -m cnnforge.boards.icebreaker`` builds the digits bitstream (as ``make bitstream
BOARD=icebreaker``).
"""

import sys

from amaranth.hdl import Elaboratable, Module
from amaranth_boards.icebreaker import ICEBreakerPlatform

from cnnforge.boards.bitstream import board_main
from cnnforge.boards.pll import ICE40PLL, ice40_pll
from cnnforge.boards.top import BoardSpec

__all__ = ["SPEC", "ICEBreakerTop", "ICEBreakerPlatform"]

SPEC = BoardSpec(
    name="icebreaker", device="up5k", rows=4, cols=3, core_mhz=30.0, baud=115200,
    bitstream="bin",
    # direct convolution only: the Winograd unit does not fit next to the rest in 5280 cells
    algorithm="direct",
    # openFPGALoader writes the iCEBreaker's SPI flash (the iCE40 boots from it)
    loader_args=("-b", "icebreaker"),
    usb_ids=((0x0403, 0x6010),),            # FT2232H
    # SPRAM weights: 1 MiB into the 16 MiB W25Q128JV, past the 104 KB bitstream
    weights_offset=0x100000,
)


class ICEBreakerTop(Elaboratable):
    """The accelerator on an iCEBreaker (see the module docstring)."""

    def __init__(self, program, spec=SPEC):
        self.program = program
        self.spec = spec
        self.pll = ice40_pll(12e6, spec.core_mhz * 1e6)

    def elaborate(self, platform):
        m = Module()
        clk12 = platform.request("clk12", 0, dir="-")
        m.submodules.pll = ICE40PLL(clk12.io, self.pll)
        m.submodules.core = core = self.spec.link_top(self.program, self.pll.f_out,
                                                      primitives="ice40")
        uart = platform.request("uart", 0)
        m.d.comb += [core.rx.eq(uart.rx.i), uart.tx.o.eq(core.tx)]
        if "spi" in core.signature.members:           # SPRAM weights from the SPI flash
            flash = platform.request("spi_flash_1x", 0)
            m.d.comb += [flash.cs.o.eq(core.spi.cs), flash.clk.o.eq(core.spi.sck),
                         flash.copi.o.eq(core.spi.copi), core.spi.cipo.eq(flash.cipo.i),
                         flash.wp.o.eq(0), flash.hold.o.eq(0)]
        m.d.comb += [platform.request("led_g", 0).o.eq(core.led_idle),
                     platform.request("led_r", 0).o.eq(core.led_error),
                     platform.request("led_r", 1).o.eq(core.led_busy),
                     platform.request("led_g", 1).o.eq(core.led_result)]
        return m


def platform():
    """The iCEBreaker platform with the break-off PMOD's LEDs and buttons."""
    plat = ICEBreakerPlatform()
    plat.add_resources(plat.break_off_pmod)
    return plat


if __name__ == "__main__":
    sys.exit(board_main(SPEC, ICEBreakerTop, platform))
