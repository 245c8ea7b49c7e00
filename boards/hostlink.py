"""Host link gateware: the accelerator behind a UART speaking :mod:`cnnforge.boards.protocol`.

::

    rx ─► UARTRx ─► frame parser ─► image buffer (block RAM) ─► feeder ─► Accelerator.i_image
                     │ (CRC, LEN, TYPE, timeout)                                    │
                     └─ error ─┐                                   Accelerator.o_logits
                               ▼                                                    ▼
    tx ◄─ UARTTx ◄──────── responder: header, logits (argmax on the fly), class, cycles, CRC

The parser checks the whole frame, CRC included, before the image reaches the accelerator: the
payload is written to a buffer of ``image_size`` bytes and only streamed into the accelerator
(one byte per cycle) once the CRC matched, so a corrupt frame never disturbs the engine. The
responder sends the result frame's header while the engine computes; the logits go straight from
``o_logits`` to the UART (the engine waits under back-pressure), the class is the running argmax
(the first largest logit, as ``numpy.argmax``), and the cycle count is the accelerator's own.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.hw.rtl.accelerator import Accelerator

from cnnforge.boards.protocol import SYNC, ErrorCode, MessageType
from cnnforge.boards.uart import UARTRx, UARTTx

__all__ = ["HostLink", "crc8_next"]


def _crc8_matrix():
    """CRC-8 (polynomial 0x07) of one byte is linear over GF(2) in ``v = crc ^ byte``: output
    bit i is the XOR of the bits of v listed in row i."""
    from cnnforge.boards.protocol import crc8
    rows = [[] for _ in range(8)]
    for j in range(8):
        out = crc8(bytes([1 << j]))
        for i in range(8):
            if out >> i & 1:
                rows[i].append(j)
    return rows


_CRC8_ROWS = _crc8_matrix()


def crc8_next(crc, byte):
    """CRC-8/SMBUS (polynomial 0x07) of ``crc`` updated with one byte: combinational, one level
    of XORs (the same function as :func:`cnnforge.boards.protocol.crc8`)."""
    value = (crc ^ byte)[:8]
    bits = []
    for row in _CRC8_ROWS:
        bit = Const(0, 1)
        for j in row:
            bit = bit ^ value[j]
        bits.append(bit)
    return Cat(*bits)


class HostLink(wiring.Component):
    """UART host link around an :class:`~cnnforge.hw.rtl.accelerator.Accelerator`.

    Parameters
    ----------
    program : Program
        The compiled network the accelerator is elaborated from.
    divisor : int
        Clock cycles per UART bit (see :func:`cnnforge.boards.uart.uart_divisor`).
    timeout : int
        Clock cycles the line may stay idle in the middle of a frame before the frame is dropped
        (answered with ``ErrorCode.TIMEOUT``) and the parser hunts for a new one.

    Members
    -------
    rx : In(1)
        UART receive line (from the host).
    tx : Out(1)
        UART transmit line (to the host).
    busy : Out(1)
        A frame is being received or answered, or the engine is computing.
    computing : Out(1)
        The image is in the engine and its logits have not all been sent.
    error : Out(1)
        Pulses when a frame is rejected.
    answered : Out(1)
        Pulses when a result frame has been sent completely.
    """

    def __init__(self, program, divisor, timeout):
        self._MustUse__silence = True             # cleared below once the checks pass
        if timeout < 20 * divisor:
            raise ValueError(f"timeout of {timeout} cycles is shorter than two UART bytes "
                             f"({20 * divisor} cycles)")
        if program.image_size > 0xFFFF:
            raise ValueError(f"an image of {program.image_size} bytes does not fit a frame "
                             "(LEN is 16 bits)")
        self._MustUse__silence = False
        self._program = program
        self._divisor = divisor
        self._timeout = timeout
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "busy": Out(1),
            "computing": Out(1),
            "error": Out(1),
            "answered": Out(1),
        })

    @property
    def program(self):
        """The compiled network."""
        return self._program

    @property
    def divisor(self):
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def timeout(self):
        """Idle clock cycles that end an incomplete frame."""
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        prog = self._program
        n_in, n_out = prog.image_size, prog.output_size
        m.submodules.uart_rx = urx = UARTRx(self._divisor)
        m.submodules.uart_tx = utx = UARTTx(self._divisor)
        m.submodules.accel = accel = Accelerator(prog)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx),
                     accel.debug.eq(0), accel.o_debug.ready.eq(1), urx.o.ready.eq(1)]

        m.submodules.image = image = memory.Memory(shape=8, depth=max(2, n_in), init=[])
        img_wr = image.write_port()
        img_rd = image.read_port()

        # ---- request from the parser to the responder -----------------------------------------
        req = Signal()                 # pulse: answer now
        req_error = Signal()           # with req: an error frame (else a result)
        req_code = Signal(8)
        busy = Signal()                # from req until the answer's last byte
        # the request registered: the parser's byte checks are not in front of the responder's
        # state (req_q counts as busy)
        req_q, req_error_q, req_code_q = Signal(), Signal(), Signal(8)
        m.d.sync += [req_q.eq(req), req_error_q.eq(req_error), req_code_q.eq(req_code)]
        feed = Signal()                # the buffered image is streaming into the engine

        # ---- frame parser ------------------------------------------------------------------------
        byte = urx.o.payload
        got = urx.o.valid
        ftype = Signal(8)
        flen = Signal(16)
        count = Signal(16)
        crc = Signal(8)
        idle = Signal(range(self._timeout + 1))
        in_frame = Signal()
        parser_idle = Signal()
        fail = Signal()                # this cycle: reject the frame with fail_code
        fail_code = Signal(8)

        m.d.comb += [img_wr.addr.eq(count), img_wr.data.eq(byte)]
        with m.If(got | ~in_frame):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self._timeout):
            m.d.sync += idle.eq(idle + 1)

        m.d.comb += in_frame.eq(~parser_idle)
        with m.If(in_frame & ~got):
            with m.If(urx.framing_error):
                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.FRAMING)]
            with m.Elif(idle == self._timeout):
                m.d.comb += [fail.eq(1), fail_code.eq(ErrorCode.TIMEOUT)]
        with m.If(fail):
            m.d.comb += [req.eq(1), req_error.eq(1), req_code.eq(fail_code)]

        def reject(reason):
            m.d.comb += [fail.eq(1), fail_code.eq(reason)]

        def abort_on_fail():
            with m.If(fail):
                m.next = "SYNC0"

        with m.FSM(name="parser") as parser:
            with m.State("SYNC0"):
                with m.If(got & ~busy & ~req_q & (byte == SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(got):
                    with m.If(byte == SYNC[1]):
                        m.d.sync += crc.eq(0)
                        m.next = "TYPE"
                    with m.Elif(byte != SYNC[0]):
                        m.next = "SYNC0"
                abort_on_fail()
            with m.State("TYPE"):
                with m.If(got):
                    m.d.sync += [ftype.eq(byte), crc.eq(crc8_next(crc, byte))]
                    with m.If(byte == MessageType.IMAGE):
                        m.next = "LEN0"
                    with m.Else():
                        reject(ErrorCode.BAD_TYPE)
                abort_on_fail()
            with m.State("LEN0"):
                with m.If(got):
                    m.d.sync += [flen[:8].eq(byte), crc.eq(crc8_next(crc, byte))]
                    m.next = "LEN1"
                abort_on_fail()
            with m.State("LEN1"):
                with m.If(got):
                    m.d.sync += [flen[8:].eq(byte), crc.eq(crc8_next(crc, byte)), count.eq(0)]
                    with m.If(Cat(flen[:8], byte) == n_in):
                        m.next = "PAYLOAD"
                    with m.Else():
                        reject(ErrorCode.BAD_LENGTH)
                abort_on_fail()
            with m.State("PAYLOAD"):
                with m.If(got):
                    m.d.comb += img_wr.en.eq(1)
                    m.d.sync += [crc.eq(crc8_next(crc, byte)), count.eq(count + 1)]
                    with m.If(count == n_in - 1):          # flen == n_in (checked in LEN1)
                        m.next = "CRC"
                abort_on_fail()
            with m.State("CRC"):
                with m.If(got):
                    with m.If(byte == crc):
                        m.d.comb += [req.eq(1), req_error.eq(0)]
                        m.d.sync += feed.eq(1)
                        m.next = "SYNC0"
                    with m.Else():
                        reject(ErrorCode.BAD_CRC)
                abort_on_fail()
        m.d.comb += parser_idle.eq(parser.ongoing("SYNC0"))

        # ---- feeder: image buffer -> accelerator -------------------------------
        rd_idx = Signal(range(max(2, n_in)))
        feed_valid = Signal()
        advance = accel.i_image.valid & accel.i_image.ready
        m.d.comb += [img_rd.addr.eq(Mux(advance, rd_idx + 1, rd_idx)),
                     accel.i_image.payload.eq(img_rd.data),
                     accel.i_image.valid.eq(feed_valid)]
        with m.If(feed & ~feed_valid):
            m.d.sync += feed_valid.eq(1)          # word 0 has been read: offer it
        with m.If(advance):
            m.d.sync += rd_idx.eq(rd_idx + 1)
            with m.If(rd_idx == n_in - 1):
                m.d.sync += [feed.eq(0), feed_valid.eq(0), rd_idx.eq(0)]

        # ---- responder --------------------------------------------------------------------------
        kind_error = Signal()
        code = Signal(8)
        tcrc = Signal(8)
        out_idx = Signal(range(max(2, n_out)))
        best = Signal(signed(8))
        best_idx = Signal(8)
        computing = Signal()
        tx_byte = Signal(8)
        tx_valid = Signal()
        sent = Signal()
        m.d.comb += [utx.i.payload.eq(tx_byte), utx.i.valid.eq(tx_valid),
                     sent.eq(utx.i.valid & utx.i.ready)]
        length = Signal(16)
        m.d.comb += length.eq(Mux(kind_error, 1, n_out + 5))

        def send(value, next_state, *, checked=True):
            m.d.comb += [tx_byte.eq(value), tx_valid.eq(1)]
            with m.If(sent):
                if checked:
                    m.d.sync += tcrc.eq(crc8_next(tcrc, tx_byte))
                m.next = next_state

        with m.FSM(name="responder"):
            with m.State("IDLE"):
                with m.If(req_q):
                    m.d.sync += [busy.eq(1), kind_error.eq(req_error_q), code.eq(req_code_q),
                                 computing.eq(~req_error_q), tcrc.eq(0), out_idx.eq(0)]
                    m.next = "SYNC0"
            with m.State("SYNC0"):
                send(SYNC[0], "SYNC1", checked=False)
            with m.State("SYNC1"):
                send(SYNC[1], "TYPE", checked=False)
            with m.State("TYPE"):
                send(Mux(kind_error, MessageType.ERROR, MessageType.RESULT), "LEN0")
            with m.State("LEN0"):
                send(length[:8], "LEN1")
            with m.State("LEN1"):
                with m.If(kind_error):
                    send(length[8:], "CODE")
                with m.Else():
                    send(length[8:], "LOGITS")
            with m.State("CODE"):
                send(code, "CRC")
            with m.State("LOGITS"):
                m.d.comb += [tx_byte.eq(accel.o_logits.payload), tx_valid.eq(accel.o_logits.valid),
                             accel.o_logits.ready.eq(utx.i.ready)]
                with m.If(sent):
                    m.d.sync += [tcrc.eq(crc8_next(tcrc, tx_byte)), out_idx.eq(out_idx + 1)]
                    with m.If((out_idx == 0) | (accel.o_logits.payload > best)):
                        m.d.sync += [best.eq(accel.o_logits.payload), best_idx.eq(out_idx)]
                    with m.If(out_idx == n_out - 1):
                        m.d.sync += computing.eq(0)
                        m.next = "CLASS"
            with m.State("CLASS"):
                send(best_idx, "CYC0")
            for k in range(4):
                with m.State(f"CYC{k}"):
                    send(accel.cycles.word_select(k, 8), f"CYC{k + 1}" if k < 3 else "CRC")
            with m.State("CRC"):
                send(tcrc, "DRAIN", checked=False)
            with m.State("DRAIN"):
                # the last byte is on the line: stay busy until it has been sent
                with m.If(~utx.busy):
                    m.d.sync += busy.eq(0)
                    m.d.comb += self.answered.eq(~kind_error)
                    m.next = "IDLE"

        m.d.comb += [self.busy.eq(busy | req_q | in_frame | feed), self.computing.eq(computing),
                     self.error.eq(req_q & req_error_q)]
        return m
