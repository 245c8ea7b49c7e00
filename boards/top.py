"""What every board runs: :class:`LinkTop` (host link + accelerator + status LEDs), and
:class:`BoardSpec`, the description a board file gives of itself.

A board file (``icebreaker.py``, ``ulx3s.py``) only adds the platform's clock (a PLL) and pins
around :class:`LinkTop`; the cocotb test simulates :meth:`BoardSpec.link_top` directly, so the
simulated design is the one in the bitstream minus the PLL and the I/O buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cnnforge.boards.hostlink import HostLink
from cnnforge.boards.spi_flash import SPI_SIGNATURE
from cnnforge.boards.uart import uart_divisor
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import device_config

__all__ = ["BoardSpec", "LinkTop", "FLASH_WAKE_S"]

#: Wait after waking the SPI flash from deep power-down: tRES1, 3 µs (W25Q128JV data sheet).
FLASH_WAKE_S = 3e-6


class _Stretch(wiring.Component):
    """``o`` stays high for 7 to 8 ``tick`` periods after each pulse on ``i`` (a 3-bit counter
    per LED; the ticks come from one prescaler shared by all LEDs). ``i`` is registered first:
    the host link's handshakes behind it are not in front of the counter's enable (a 23.7 ns
    path across the UP5K)."""

    def __init__(self):
        super().__init__({"i": In(1), "tick": In(1), "o": Out(1)})

    def elaborate(self, platform):
        m = Module()
        left, i = Signal(3), Signal()
        m.d.sync += i.eq(self.i)
        with m.If(i):
            m.d.sync += left.eq(7)
        with m.Elif(self.tick & (left != 0)):
            m.d.sync += left.eq(left - 1)
        m.d.comb += self.o.eq(left != 0)
        return m


class LinkTop(wiring.Component):
    """The board core: :class:`~.hostlink.HostLink` (UART + accelerator) and status LEDs.

    Parameters
    ----------
    program : Program
    clk_freq : float
        Frequency of the ``sync`` domain, Hz.
    baud : int
        UART rate, bits per second.
    timeout_ms : float
        Idle time that ends an incomplete frame.
    blink_ms : float
        At most how long the error and result LEDs stay lit after an event (at least 7/16 of
        it: the stretch is 7 to 8 ticks of a power-of-two prescaler).
    primitives : str or False
        The FPGA family (``"ice40"``, ``"ecp5"``) whose blocks are instantiated (synthesis)
        rather than modelled (``False``, simulation); see
        :class:`~cnnforge.hw.rtl.accelerator.Accelerator`.
    flash_offset : int or None
        With SPRAM weights: read them from the SPI flash at this address after reset.

    Members
    -------
    rx : In(1), tx : Out(1)
        UART lines (host side: the host's TX drives ``rx``).
    led_idle : Out(1)
        Waiting for a frame.
    led_busy : Out(1)
        Receiving, computing or answering, or reading the weights from the flash.
    led_error : Out(1)
        A frame was rejected recently; steady: no usable weights (SPRAM weights not loaded, or
        the flash image's CRC-32 did not match: a bad image).
    spi : Out(SPI_SIGNATURE)
        With ``flash_offset`` and SPRAM weights: the SPI flash.
    led_result : Out(1)
        A result was sent recently.
    """

    def __init__(self, program, clk_freq, baud, *, timeout_ms=20.0, blink_ms=200.0,
                 primitives=False, flash_offset=None):
        self._clk_freq = float(clk_freq)
        self._baud = int(baud)
        self._divisor = uart_divisor(clk_freq, baud)
        flash = None
        if flash_offset is not None:
            flash = (flash_offset, math.ceil(clk_freq * FLASH_WAKE_S) + 1)
        self._link = HostLink(program, self._divisor,
                              timeout=max(20 * self._divisor, int(clk_freq * timeout_ms / 1e3)),
                              primitives=primitives, flash=flash)
        # LED prescaler: the largest power of two of cycles with 8 ticks <= blink_ms
        self._tick_bits = max(1, math.floor(math.log2(max(2.0, clk_freq * blink_ms / 1e3 / 8))))
        members = {
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "led_idle": Out(1), "led_busy": Out(1), "led_error": Out(1), "led_result": Out(1),
        }
        if "spi" in self._link.signature.members:
            members["spi"] = Out(SPI_SIGNATURE)
        super().__init__(members)

    @property
    def link(self):
        """The :class:`~.hostlink.HostLink` inside."""
        return self._link

    @property
    def divisor(self):
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def clk_freq(self):
        """Clock frequency, Hz."""
        return self._clk_freq

    @property
    def baud(self):
        """UART rate, bit/s."""
        return self._baud

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self._link
        m.submodules.err = err = _Stretch()
        m.submodules.res = res = _Stretch()
        prescaler = Signal(self._tick_bits)
        m.d.sync += prescaler.eq(prescaler + 1)
        tick = prescaler == 0
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx),
                     err.i.eq(link.error), res.i.eq(link.answered), err.tick.eq(tick),
                     res.tick.eq(tick), self.led_result.eq(res.o),
                     self.led_error.eq(err.o | (~link.weights_ready & ~link.loading)),
                     self.led_busy.eq(link.busy), self.led_idle.eq(~link.busy)]
        if "spi" in self.signature.members:
            wiring.connect(m, link.spi, wiring.flipped(self.spi))
        return m


@dataclass(frozen=True)
class BoardSpec:
    """A board the accelerator is built for.

    Members
    -------
    name : str
        ``icebreaker``, ``ulx3s-85f``, ``ulx3s-25f`` (``--board`` / ``BOARD=``).
    device : str
        Device key of :data:`cnnforge.hw.compiler.devices.DEVICES` (``up5k``, ``lfe5u-85f``,
        ``lfe5u-25f``).
    rows, cols : int
        PE array for this board's device (what fits its DSP blocks, see docs/boards.md).
    core_mhz : float
        Core clock from the PLL.
    baud : int
        UART rate of the host link.
    bitstream : str
        Suffix of the bitstream file (``bin`` for iCE40, ``bit`` for ECP5).
    loader_args : tuple of str
        openFPGALoader's board selection and mode (``-b icebreaker``...).
    usb_ids : tuple of (int, int)
        USB vendor/product ids of the board's programmer (to say "no board" before trying).
    input_buffer_bytes : int
        Input tile buffer per ping-pong half.
    algorithm : str
        ``AcceleratorConfig.algorithm``: ``"direct"`` leaves the Winograd unit (and the wider PE
        operands it needs) out of the design, for the smallest device.
    weights_offset : int or None
        Address in the board's SPI flash of the weight image of a design with SPRAM weights
        (``cnnforge flash`` writes it there; the gateware reads it after reset); None: the
        weights come over the UART only.
    """

    name: str
    device: str
    rows: int
    cols: int
    core_mhz: float
    baud: int
    bitstream: str
    loader_args: tuple = ()
    usb_ids: tuple = ()
    input_buffer_bytes: int = 4096
    algorithm: str = "auto"
    weights_offset: int | None = None

    def config(self, qnet=None):
        """The accelerator configuration built for this board; for ``qnet``, the array
        :func:`~cnnforge.hw.compiler.memory.device_config` chooses (narrower where the network
        cannot share the requantizer or runs faster without sharing it)."""
        device = DEVICES[self.device]
        fields = dict(input_buffer_bytes=self.input_buffer_bytes, algorithm=self.algorithm)
        if qnet is None or (self.rows, self.cols) != (device.rows, device.cols):
            return device.config(self.rows, self.cols, **fields)
        return device_config(qnet, device, **fields)

    def link_top(self, program, clk_freq=None, *, primitives=False):
        """The board core for ``program`` at this board's clock and baud rate (reading SPRAM
        weights from the flash at :attr:`weights_offset`, if the board has one)."""
        return LinkTop(program, clk_freq or self.core_mhz * 1e6, self.baud,
                       primitives=primitives, flash_offset=self.weights_offset)
