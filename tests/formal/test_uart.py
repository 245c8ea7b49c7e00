"""Formal check of the UART receiver's framing (``boards/uart.py: UARTRx``).

:class:`RxFraming` drives the line with one 8N1 frame at exactly ``divisor`` cycles a bit
(start bit low, 8 data bits LSB first, the stop bit, then idle high), with any data byte, any
stop bit value and any idle time before the frame. Checked for every such frame (bounded, the
whole frame and a few cycles after it):

* a byte is delivered (``o.valid`` rises) only once the stop bit's middle has been sent, only if
  the stop bit was high, and it is the byte sent;
* ``framing_error`` pulses only if the stop bit was low, once the stop bit's middle was sent;
* by the end of the stop bit, exactly one of the two has happened.
"""

import pytest
from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Cat, Cover, Elaboratable, Module, Signal

from cnnforge.boards.uart import UARTRx
from cnnforge.sim.formal import run_formal

DIVISOR = 4
#: Idle cycles before the frame: any of 0 .. IDLE_MAX.
IDLE_MAX = 3
#: Cycles after the start bit's first cycle by which the frame must have been judged: the end of
#: the stop bit plus the two-flop synchronizer and the registered outputs.
JUDGED = 10 * DIVISOR + 4


class RxFraming(Elaboratable):
    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = UARTRx(DIVISOR)
        byte, stop, idle = AnyConst(8), AnyConst(1), AnyConst(range(IDLE_MAX + 1))
        m.d.comb += dut.o.ready.eq(0)          # a delivered byte stays on o
        # the line: idle high, then start, data (LSB first), stop, idle high
        cycle = Signal(range(IDLE_MAX + JUDGED + 2))
        with m.If(cycle != IDLE_MAX + JUDGED + 1):
            m.d.sync += cycle.eq(cycle + 1)
        t = Signal(range(IDLE_MAX + JUDGED + 2))         # cycles since the start bit began
        m.d.comb += t.eq(cycle - idle)
        started = cycle >= idle
        frame = Cat(0, byte, stop)                       # bits 0 .. 9 on the line
        bit = Signal(range(16))
        m.d.comb += bit.eq(t // DIVISOR)
        with m.If(~started | (bit >= 10)):
            m.d.comb += dut.rx.eq(1)
        with m.Else():
            m.d.comb += dut.rx.eq(frame.bit_select(bit, 1))
        # what the receiver did
        was_valid, errored = Signal(), Signal()
        m.d.sync += was_valid.eq(dut.o.valid)
        with m.If(dut.framing_error):
            m.d.sync += errored.eq(1)
        delivered = dut.o.valid & ~was_valid
        stop_middle = started & (t >= 9 * DIVISOR + DIVISOR // 2)
        m.d.comb += [
            Assert(~delivered | (stop_middle & stop & (dut.o.payload == byte))),
            Assert(~(dut.o.valid & was_valid) | (dut.o.payload == byte)),   # and it stays
            Assert(~dut.framing_error | (stop_middle & ~stop & ~errored)),
            Assert(~(started & (t == JUDGED)) | (dut.o.valid == stop) & (errored == ~stop)),
            Assert(~dut.overrun),
            Cover(started & (t == JUDGED) & stop), Cover(started & (t == JUDGED) & ~stop),
        ]
        return m


@pytest.mark.parametrize("mode", ["bmc", "cover"])
def test_rx_framing(mode):
    result = run_formal(RxFraming(), mode=mode, depth=IDLE_MAX + JUDGED + 2,
                        name=f"uart_rx_framing_{mode}")
    assert result.passed, result.summary()
