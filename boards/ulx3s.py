"""ULX3S (ECP5 LFE5U-85F or -25F): 25 MHz oscillator -> EHXPLLL -> core clock; UART through the
FT231X; LEDs 0-3 = waiting for a frame, busy, a result was sent, a frame was rejected.

The PE array follows the DSP blocks (MULT18X18D: 156 on the 85F, 28 on the 25F; the
post-processor takes 4): 8×8 on the 85F, 4×4 on the 25F (docs/boards.md).

``python -m cnnforge.boards.ulx3s 85f`` builds the digits bitstream (as ``make bitstream
BOARD=ulx3s-85f``).
"""

import sys

from amaranth.hdl import Elaboratable, Module
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_85F_Platform

from cnnforge.boards.bitstream import board_main
from cnnforge.boards.pll import ECP5PLL, ecp5_pll
from cnnforge.boards.top import BoardSpec

__all__ = ["SPEC_85F", "SPEC_25F", "ULX3STop"]

_USB = ((0x0403, 0x6015),)                  # FT231X

SPEC_85F = BoardSpec(
    name="ulx3s-85f", device="lfe5u-85f", rows=8, cols=8, core_mhz=55.0, baud=115200,
    bitstream="bit", loader_args=("-b", "ulx3s"), usb_ids=_USB,
)
SPEC_25F = BoardSpec(
    name="ulx3s-25f", device="lfe5u-25f", rows=4, cols=4, core_mhz=62.5, baud=115200,
    bitstream="bit", loader_args=("-b", "ulx3s"), usb_ids=_USB,
)

PLATFORMS = {"ulx3s-85f": ULX3S_85F_Platform, "ulx3s-25f": ULX3S_25F_Platform}


class ULX3STop(Elaboratable):
    """The accelerator on a ULX3S (see the module docstring)."""

    def __init__(self, program, spec=SPEC_85F):
        self.program = program
        self.spec = spec
        self.pll = ecp5_pll(25e6, spec.core_mhz * 1e6)

    def elaborate(self, platform):
        m = Module()
        clk25 = platform.request("clk25", 0)
        m.submodules.pll = ECP5PLL(clk25.i, self.pll)
        m.submodules.core = core = self.spec.link_top(self.program, self.pll.f_out,
                                                      primitives="ecp5")
        uart = platform.request("uart", 0)
        m.d.comb += [core.rx.eq(uart.rx.i), uart.tx.o.eq(core.tx)]
        for index, led in enumerate((core.led_idle, core.led_busy, core.led_result,
                                     core.led_error)):
            m.d.comb += platform.request("led", index).o.eq(led)
        return m


def platform(name="ulx3s-85f"):
    """The ULX3S platform of the given variant."""
    return PLATFORMS[name]()


def _main(variant="85f"):
    """``python -m cnnforge.boards.ulx3s [85f|25f]``: the digits bitstream for that variant."""
    spec = {s.name: s for s in (SPEC_85F, SPEC_25F)}.get(f"ulx3s-{variant.lower()}")
    if spec is None:
        print(f"cnnforge: error: unknown ULX3S variant {variant!r}; choose 85f or 25f",
              file=sys.stderr)
        return 2
    return board_main(spec, ULX3STop, lambda: platform(spec.name))


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:2]))
