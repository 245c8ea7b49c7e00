"""PLLs for the core clock: iCE40 ``SB_PLL40_PAD`` and ECP5 ``EHXPLLL``.

The divider searches follow the vendors' documented ranges (the same ones ``icepll`` and
``ecppll`` use); each returns the parameters and the frequency actually reached, which the
board top then uses for the clock constraint and the UART divisor.
"""

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["ICE40PLLParams", "ECP5PLLParams", "ice40_pll", "ecp5_pll", "ICE40PLL", "ECP5PLL"]


@dataclass(frozen=True)
class ICE40PLLParams:
    """``SB_PLL40_*`` settings (FEEDBACK_PATH = SIMPLE).

    ``f_out = f_in · (DIVF + 1) / ((DIVR + 1) · 2^DIVQ)``."""
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: float
    f_out: float


def ice40_pll(f_in, f_out):
    """The iCE40 PLL settings closest to ``f_out`` Hz from ``f_in`` Hz.

    Ranges (iCE40 sysCLOCK PLL design guide, SIMPLE feedback): PFD 10–133 MHz, VCO 533–1066 MHz,
    output 16–275 MHz; DIVR 0–15, DIVF 0–127, DIVQ 1–6.

    Raises
    ------
    ValueError
        If no setting lands within 1 % of ``f_out``.
    """
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if not 16e6 <= f <= 275e6:
                    continue
                if best is None or abs(f - f_out) < abs(best[3] - f_out):
                    best = (divr, divf, divq, f, f_pfd)
    if best is None or abs(best[3] - f_out) > 0.01 * f_out:
        raise ValueError(f"the iCE40 PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz")
    divr, divf, divq, f, f_pfd = best
    filter_range = next(i for i, limit in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 1e12), 1)
                        if f_pfd < limit)
    return ICE40PLLParams(divr, divf, divq, filter_range, f_in, f)


@dataclass(frozen=True)
class ECP5PLLParams:
    """``EHXPLLL`` settings (feedback from CLKOP).

    ``f_out = f_in · CLKFB_DIV / CLKI_DIV``, VCO = ``f_out · CLKOP_DIV``."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in: float
    f_out: float


def ecp5_pll(f_in, f_out):
    """The ECP5 PLL settings closest to ``f_out`` Hz from ``f_in`` Hz (then the highest VCO).

    Ranges (ECP5 sysCLOCK PLL/DLL design guide, TN1263): PFD 3.125–400 MHz, VCO 400–800 MHz,
    output 3.125–400 MHz.

    Raises
    ------
    ValueError
        If no setting lands within 1 % of ``f_out``.
    """
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            f = f_pfd * clkfb_div
            if not 3.125e6 <= f <= 400e6:
                continue
            for clkop_div in range(1, 129):
                f_vco = f * clkop_div
                if not 400e6 <= f_vco <= 800e6:
                    continue
                key = (abs(f - f_out), -f_vco)
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f)
    if best is None or abs(best[4] - f_out) > 0.01 * f_out:
        raise ValueError(f"the ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    _, clki_div, clkfb_div, clkop_div, f = best
    return ECP5PLLParams(clki_div, clkfb_div, clkop_div, f_in, f)


class ICE40PLL(Elaboratable):
    """The ``sync`` domain from an iCE40 PLL fed by a clock pad (``SB_PLL40_PAD``), held in reset
    until the PLL locks.

    Parameters
    ----------
    pin : IOPort
        The raw clock pin (``platform.request(..., dir="-").io``), a PLL-capable global input.
    params : ICE40PLLParams
    """

    def __init__(self, pin, params):
        self.pin = pin
        self.params = params

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq, p_FILTER_RANGE=p.filter_range,
            i_PACKAGEPIN=self.pin,
            i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=cd_sync.clk,
            o_LOCK=locked,
        )
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        if platform is not None:
            platform.add_clock_constraint(cd_sync.clk, p.f_out)
        return m


class ECP5PLL(Elaboratable):
    """The ``sync`` domain from an ECP5 ``EHXPLLL``, held in reset until the PLL locks.

    Parameters
    ----------
    clk_in : Signal
        The reference clock (from an input buffer).
    params : ECP5PLLParams
    """

    def __init__(self, clk_in, params):
        self.clk_in = clk_in
        self.params = params

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.f_out / 1e6:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_div - 1, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=self.clk_in, i_CLKFB=ClockSignal("sync"), i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=cd_sync.clk, o_LOCK=locked,
        )
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        if platform is not None:
            platform.add_clock_constraint(cd_sync.clk, p.f_out)
        return m
