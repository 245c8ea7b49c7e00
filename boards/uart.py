"""UART gateware: 8N1 receiver and transmitter with ``amaranth.lib.stream`` byte interfaces.

Both run from the ``sync`` domain with a fixed number of clock cycles per bit (``divisor =
round(f_clk / baud)``; the rate error is ``|f_clk / divisor − baud| / baud`` and must stay well
under the ±4 % an 8N1 receiver tolerates at mid-bit sampling). The line idles high; a frame is a
start bit (low), 8 data bits LSB first and one stop bit (high).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "uart_divisor"]


def uart_divisor(clk_freq, baud, *, tolerance=0.02):
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises
    ------
    ValueError
        If fewer than 4 cycles per bit (the receiver cannot find the middle of a bit), or if the
        rounded divisor misses ``baud`` by more than ``tolerance`` (2 % by default: half the
        margin of an 8N1 frame, the other half is the host's).
    """
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(f"baud rate {baud} needs at least 4 clock cycles per bit; the clock "
                         f"({clk_freq / 1e6:g} MHz) gives {clk_freq / baud:.2f}")
    error = abs(clk_freq / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"baud rate {baud} is {error:.1%} off at {clk_freq / 1e6:g} MHz "
                         f"(divisor {divisor}); choose a rate that divides the clock better")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver.

    The line goes through a two-flop synchronizer; a falling edge starts a frame, the start bit is
    checked again at its middle (a shorter glitch is ignored), then every bit is sampled at its
    middle. A byte whose stop bit is low is dropped and flagged on ``framing_error``; the receiver
    then waits for the line to return high before it looks for the next start bit (so a break
    produces one error, not a stream of zero bytes).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : In(1)
        The serial line (asynchronous to the clock).
    o : Out(stream.Signature(8))
        Received bytes. There is no flow control on a UART: a byte not taken before the next one
        completes is overwritten (``overrun`` pulses). Consumers that are always ready within a
        byte time never lose one.
    framing_error : Out(1)
        Pulses for one cycle when a stop bit was low (registered: in the cycle after the stop bit's
        sample, so the receiver's timer is not in front of the consumer's state).
    overrun : Out(1)
        Pulses for one cycle when a byte replaced one that was still waiting in ``o``.
    """

    def __init__(self, divisor):
        if divisor < 4:
            self._MustUse__silence = True         # not built: no "never used" warning
            raise ValueError(f"divisor must be at least 4 clock cycles per bit, got {divisor}")
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self._divisor))
        zero = Signal(init=1)                       # timer == 0, kept in a register
        bits = Signal(range(9))
        shreg = Signal(8)

        def load(cycles):
            return [timer.eq(cycles), zero.eq(cycles == 0)]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += self.framing_error.eq(0)

        with m.If(~zero):
            m.d.sync += [timer.eq(timer - 1), zero.eq(timer == 1)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += load(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(zero):
                    with m.If(~rx):
                        m.d.sync += [*load(self._divisor - 1), bits.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"               # a glitch, not a start bit
            with m.State("DATA"):
                with m.If(zero):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), *load(self._divisor - 1),
                                 bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(zero):
                    with m.If(rx):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.d.comb += self.overrun.eq(self.o.valid & ~self.o.ready)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Takes one byte from ``i`` when idle or in the last cycle of a stop bit and shifts it out
    (start bit, 8 data bits LSB first, stop bit), so a byte stream is sent back to back at exactly
    one frame per ``10 · divisor`` cycles.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 1.

    Members
    -------
    i : In(stream.Signature(8))
    tx : Out(1)
        The serial line (idles high).
    busy : Out(1)
        A frame is being sent.
    """

    def __init__(self, divisor):
        if divisor < 1:
            self._MustUse__silence = True
            raise ValueError(f"divisor must be at least 1 clock cycle per bit, got {divisor}")
        self._divisor = divisor
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        tick = Signal(init=1)                       # timer == 0, kept in a register
        shreg = Signal(10, init=0b1111111111)       # stop bit, 8 data bits, start bit (LSB)
        left = Signal(range(11))
        # ready while idle, and in the last cycle of a stop bit: a byte stream leaves with no
        # gap, exactly 10·divisor cycles per byte
        m.d.comb += [self.i.ready.eq((left == 0) | ((left == 1) & tick)),
                     self.busy.eq(left != 0), self.tx.eq(shreg[0])]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq((1 << 9) | (self.i.payload << 1)), left.eq(10),
                         timer.eq(self._divisor - 1), tick.eq(self._divisor == 1)]
        with m.Elif(left == 0):
            pass
        with m.Elif(tick):
            m.d.sync += [shreg.eq((1 << 9) | (shreg >> 1)), left.eq(left - 1),
                         timer.eq(self._divisor - 1), tick.eq(self._divisor == 1)]
        with m.Else():
            m.d.sync += [timer.eq(timer - 1), tick.eq(timer == 1)]
        return m
