"""Host link gateware: the accelerator behind a UART speaking :mod:`cnnforge.boards.protocol`.

::

    rx ─► UARTRx ─► FrameParser ── image, done ──► ImageBuffer ─► FIFO ─► Accelerator.i_image
                    (TYPE, LEN, CRC, timeout)      (block RAM)                       │
                       request │  ▲ hold                                 Accelerator.o_logits
                               ▼  │                                                  ▼
    tx ◄─ UARTTx ◄───────── Responder: header, logits (argmax on the fly), class, cycles, CRC
                                       or the status (weights' CRC-32, the network's, flags)

    SPRAM weights: FrameParser (weights frames) ─┬─► Accelerator.i_weights
                   SPIFlashReader (after reset) ─┘   CRC-32 ─► ready (== the network's)

The parser checks the whole frame, CRC included, before the image reaches the accelerator: the
payload is written to a buffer of ``image_size`` bytes and only streamed into the accelerator
(one byte per cycle) once the CRC matched, so a corrupt frame never disturbs the engine. The
responder sends the result frame's header while the engine computes; the logits go straight from
``o_logits`` to the UART (the engine waits under back-pressure), the class is the running argmax
(the first largest logit, as ``numpy.argmax``), and the cycle count is the accelerator's own.

With its weights in SPRAM the engine starts without them: weights frames (or, on a board with
a flash offset, the SPI flash right after reset) stream the weight image into the accelerator
and through a CRC-32; images are refused (``NO_WEIGHTS``) until it equals the network's.

Each block is a :class:`~amaranth.lib.wiring.Component` whose docstring states its contract;
:class:`HostLink` only joins them, with a one-byte FIFO between the engine and the responder and
another before the transmitter (registers on both sides of the responder's output mux: the link
runs as fast as the engine's clock). The parser and the responder each keep a running
:class:`CRC8`; the parser starts no frame while the responder is busy (``hold``).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import crc, data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from cnnforge.hw.compiler.memory import MEMORY_FAMILIES
from cnnforge.hw.compiler.program import weight_image
from cnnforge.hw.models.timing import read_port_latency
from cnnforge.hw.rtl.accelerator import Accelerator
from cnnforge.hw.rtl.banked import BankedMemory
from cnnforge.hw.rtl.common import NO_RW_CHECK

from cnnforge.boards.protocol import (SYNC, WEIGHT_CHUNK, ErrorCode, MessageType, crc8,
                                     weights_hash)
from cnnforge.boards.spi_flash import SPI_SIGNATURE, SPIFlashReader
from cnnforge.boards.uart import UARTRx, UARTTx

__all__ = ["HostLink", "FrameParser", "ImageBuffer", "Responder", "CRC8", "Request",
           "crc8_next"]


def _crc8_matrix():
    """CRC-8 (polynomial 0x07) of one byte is linear over GF(2) in ``v = crc ^ byte``: output
    bit i is the XOR of the bits of v listed in row i."""
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


Request = data.StructLayout({"error": 1, "status": 1, "code": 8})
"""What :class:`FrameParser` asks :class:`Responder` to send: a result frame (``error`` and
``status`` low), a status frame (``status``) or an error frame carrying ``code`` (an
:class:`~cnnforge.boards.protocol.ErrorCode`; 0 otherwise)."""


def _image_write_signature(image_size):
    """The image buffer's write port: ``max(2, image_size)`` bytes (the memory has at least two
    words)."""
    return memory.WritePort.Signature(addr_width=ceil_log2(max(2, image_size)), shape=8)


class CRC8(wiring.Component):
    """Running CRC-8/SMBUS of a byte sequence: :func:`crc8_next` behind an 8-bit register.

    Members
    -------
    clear : In(1)
        Restart: ``crc`` is 0 after the clock edge (``clear`` takes precedence over ``valid``).
    valid : In(1)
        ``data`` is the next byte of the sequence.
    data : In(8)
    crc : Out(8)
        CRC of the bytes given with ``valid`` since the last ``clear``; a byte is included from
        the cycle after it was given (registered, no combinational path from ``data``).
    """

    def __init__(self):
        super().__init__({"clear": In(1), "valid": In(1), "data": In(8), "crc": Out(8)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.crc.eq(0)
        with m.Elif(self.valid):
            m.d.sync += self.crc.eq(crc8_next(self.crc, self.data))
        return m


class FrameParser(wiring.Component):
    """Receiver of the host's frames: checks every field, stores the image of a good frame.

    While hunting, a SYNC0 byte counts only while ``hold`` is low (bytes that arrive while the
    last frame is still being answered are discarded). From SYNC0 on the parser is in a frame
    (``in_frame``); more SYNC0s keep waiting for SYNC1, any other byte is noise and ends the
    frame silently. After SYNC1, TYPE, LEN, the payload and the CRC byte are checked as they
    arrive, and payload byte ``k`` is written to ``image`` at address ``k`` the cycle after it
    arrives (the buffer holds a complete image only once the CRC byte matched).

    The parser is two stages: the checks of a byte (against SYNC, the types, LEN, the running
    CRC) are registered with it, and the frame's state machine acts on them a cycle later, so
    that no compare shares a cycle with the state decisions. Every input is seen one cycle late:
    unless it ended silently, a frame ends with exactly one ``request``, the cycle after the
    byte or the event that decides it, and the parser hunts again from the cycle after that:

    - the CRC byte matches: for an image, a result (``done`` pulses with it) or, while
      ``weights_ready`` is low, the error ``NO_WEIGHTS``; for a weights or status frame, a
      status;
    - TYPE is not ``IMAGE``, ``STATUS`` or (with ``weights``) ``WEIGHTS`` (``BAD_TYPE``), LEN
      is not ``image_size``, 0 or 2 to ``WEIGHT_CHUNK + 1`` for them (``BAD_LENGTH``) or the
      CRC byte differs (``BAD_CRC``): an error at that byte;
    - in a cycle without a byte: ``framing_error`` (``FRAMING``), or the ``timeout + 1``-th
      cycle in a row without a byte (``TIMEOUT``): an error the cycle after.

    Parameters
    ----------
    image_size : int
        Payload bytes of an image frame (1 to 65535).
    timeout : int
        Cycles without a byte, in the middle of a frame, that end it.
    weights : bool
        Take weights frames (a board with SPRAM weights): their flag byte pulses
        ``weights_first`` when it starts an upload, their other payload bytes go out on
        ``o_weights`` as they arrive (before the CRC is checked: a bad frame leaves a hash
        that cannot match).

    Members
    -------
    i : In(stream.Signature(8, always_ready=True))
        Received bytes; a UART has no flow control, every byte is taken in the cycle it is valid.
        Bytes come at least two cycles apart and the payload holds its value until the next
        byte (as :class:`~cnnforge.boards.uart.UARTRx`'s does: a byte every ten bit times).
    framing_error : In(1)
        Pulses when the UART receiver dropped a byte (its stop bit was low).
    hold : In(1)
        Do not start a frame: the answer to the last one is not sent yet.
    image : In(memory.WritePort.Signature(addr_width=ceil_log2(max(2, image_size)), shape=8))
        Writes of the payload into the image buffer (``addr``, ``data``, ``en`` are outputs).
    request : Out(stream.Signature(Request, always_ready=True))
        The answer to the frame, one cycle long; the responder takes every request.
    done : Out(1)
        Pulses when the buffer holds a complete image whose CRC matched (with its request).
    in_frame : Out(1)
        Past SYNC0: a frame is being received.
    weights_ready : In(1)
        Images are taken (the weights are loaded).
    o_weights : Out(stream.Signature(8, always_ready=True))
        Weight-image bytes of weights frames.
    weights_first : Out(1)
        Pulses at the flag byte of a first chunk.
    """

    def __init__(self, image_size, timeout, *, weights=False):
        self._MustUse__silence = True             # cleared below once the checks pass
        if not 1 <= image_size <= 0xFFFF:
            raise ValueError(f"an image of {image_size} bytes does not fit a frame (LEN is 16 "
                             "bits; an image has 1 to 65535 bytes)")
        if timeout < 1:
            raise ValueError(f"timeout must be at least 1 clock cycle, got {timeout}")
        self._MustUse__silence = False
        self._image_size = image_size
        self._timeout = timeout
        self._weights = weights
        super().__init__({
            "weights_ready": In(1, init=1),
            "o_weights": Out(stream.Signature(8, always_ready=True)),
            "weights_first": Out(1),
            "i": In(stream.Signature(8, always_ready=True)),
            "framing_error": In(1),
            "hold": In(1),
            "image": In(_image_write_signature(image_size)),
            "request": Out(stream.Signature(Request, always_ready=True)),
            "done": Out(1),
            "in_frame": Out(1),
        })

    @property
    def image_size(self):
        """Payload bytes of an image frame."""
        return self._image_size

    @property
    def timeout(self):
        """Idle clock cycles that end an incomplete frame."""
        return self._timeout

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC8()
        c = self._checks(m, crc)
        m.d.comb += [self.image.addr.eq(c.count), self.image.data.eq(c.byte),
                     crc.data.eq(c.byte), self.o_weights.payload.eq(c.byte),
                     self.request.valid.eq(c.fail | self.done),
                     self.request.payload.error.eq(c.fail),
                     self.request.payload.code.eq(c.fail_code)]
        self._quiet_end(m, c)
        self._frame_fsm(m, crc, c)
        return m

    def _quiet_end(self, m, c):
        """A frame's end in a cycle without a byte: the framing error or the timeout. Whether
        the cycle has neither a byte nor a reason to go on (``quiet_fail``) is registered a
        cycle ahead from the same inputs as ``got``, ``framing`` and the timeout's ``expired``,
        so the state machine's abort sees one register and the state, not the idle counter's
        compare chain."""
        # the idle cycles counted from 2**k − timeout: the count's top bit is idle == timeout
        # (`expired`), and the next count's top bit the carry chain's end, no compare
        top = ceil_log2(self._timeout + 1)
        idle = Signal(top + 1, init=2 ** top - self._timeout)
        expired, idle_inc = idle[top], Signal(top + 1)
        expired_next = Signal()
        quiet_fail = c.quiet_fail      # ~got & (framing | expired), as a register
        m.d.comb += [idle_inc.eq(idle + 1), expired_next.eq(expired)]
        with m.If(c.got | ~self.in_frame):
            m.d.sync += idle.eq(idle.init)
            m.d.comb += expired_next.eq(0)
        with m.Elif(~expired):
            m.d.sync += idle.eq(idle_inc)
            m.d.comb += expired_next.eq(idle_inc[top])
        m.d.sync += quiet_fail.eq(~self.i.valid & (self.framing_error | expired_next))
        with m.If(self.in_frame & quiet_fail):
            m.d.comb += [c.fail.eq(1),
                         c.fail_code.eq(Mux(c.framing, ErrorCode.FRAMING, ErrorCode.TIMEOUT))]

    def _checks(self, m, crc):
        """Stage 1: the byte's checks, registered with its valid (``got``), the framing error
        and ``hold``. The payload is held until the next byte, which comes two or more cycles
        later, so the CRC, the count, LEN's low byte and TYPE the checks use are up to date."""
        c = SimpleNamespace(
            byte=self.i.payload, got=Signal(), framing=Signal(), hold=Signal(),
            len_lo=Signal(8),              # LEN's low byte, checked with the high byte
            left=Signal(16), count=Signal(16),     # payload bytes still to come / received
            is_image=Signal(), is_status=Signal(), is_weights=Signal(),  # its compares
            # LEN's low byte's compares, registered with it (LEN's check then compares the
            # high byte alone)
            lo_image=Signal(), lo_zero=Signal(), lo_ge2=Signal(), lo_le_top=Signal(),
            len_top=WEIGHT_CHUNK + 1,      # a weights frame's largest LEN
            is_sync0=Signal(), is_sync1=Signal(), type_ok=Signal(), len_ok=Signal(),
            crc_ok=Signal(), first_byte=Signal(), last_byte=Signal(),
            quiet_fail=Signal(name="quiet_fail"),
            fail=Signal(),                 # this cycle: reject the frame with fail_code
            fail_code=Signal(8))
        types = [MessageType.IMAGE, MessageType.STATUS]
        if self._weights:
            types.append(MessageType.WEIGHTS)
        c.value = Cat(c.len_lo, c.byte)
        # a status frame's LEN (without weights frames every other type's: TYPE is checked
        # first); a weights frame's: 2 to len_top, on the registered low byte's compares
        other_ok = c.lo_zero & (c.byte == 0)
        if self._weights:
            weights_ok = (((c.byte != 0) | c.lo_ge2)
                          & ((c.byte < c.len_top >> 8)
                             | ((c.byte == c.len_top >> 8) & c.lo_le_top)))
            other_ok = Mux(c.is_weights, weights_ok, other_ok)
        m.d.sync += [
            c.got.eq(self.i.valid), c.framing.eq(self.framing_error), c.hold.eq(self.hold),
            c.is_sync0.eq(c.byte == SYNC[0]), c.is_sync1.eq(c.byte == SYNC[1]),
            c.type_ok.eq(Cat(c.byte == t for t in types).any()),
            c.len_ok.eq(Mux(c.is_image, c.lo_image & (c.byte == self._image_size >> 8),
                            other_ok)),
            c.crc_ok.eq(c.byte == crc.crc),
            c.first_byte.eq(c.count == 0),
            c.last_byte.eq(c.left == 1),      # (a down-counter: no subtract-and-compare chain)
        ]
        return c

    def _frame_fsm(self, m, crc, c):
        """Stage 2: the frame's states, a cycle after the byte, on its checks ``c``."""
        byte, fail, got = c.byte, c.fail, c.got

        def reject(reason):
            m.d.comb += [fail.eq(1), c.fail_code.eq(reason)]
            m.next = "SYNC0"

        def abort_on_quiet_end():
            # (a byte's rejection goes to SYNC0 in its own branch, `reject`, and never shares a
            # cycle with the quiet end, so `fail`'s OR of every rejection is not in front of the
            # next state: timing, the UP5K's seven-LUT path)
            with m.If(c.quiet_fail):
                m.next = "SYNC0"

        with m.FSM(name="parser") as fsm:
            with m.State("SYNC0"):
                with m.If(got & ~c.hold & c.is_sync0):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(got):
                    with m.If(c.is_sync1):
                        m.d.comb += crc.clear.eq(1)
                        m.next = "TYPE"
                    with m.Elif(~c.is_sync0):
                        m.next = "SYNC0"
                abort_on_quiet_end()
            with m.State("TYPE"):
                with m.If(got):
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += [c.is_image.eq(byte == MessageType.IMAGE),
                                 c.is_status.eq(byte == MessageType.STATUS),
                                 c.is_weights.eq(byte == MessageType.WEIGHTS)]
                    with m.If(c.type_ok):
                        m.next = "LEN0"
                    with m.Else():
                        reject(ErrorCode.BAD_TYPE)
                abort_on_quiet_end()
            with m.State("LEN0"):
                with m.If(got):
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += [c.len_lo.eq(byte),
                                 c.lo_image.eq(byte == self._image_size & 0xFF),
                                 c.lo_zero.eq(byte == 0), c.lo_ge2.eq(byte >= 2),
                                 c.lo_le_top.eq(byte <= c.len_top & 0xFF)]
                    m.next = "LEN1"
                abort_on_quiet_end()
            with m.State("LEN1"):
                with m.If(got):
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += [c.count.eq(0), c.left.eq(c.value)]
                    with m.If(~c.len_ok):
                        reject(ErrorCode.BAD_LENGTH)
                    with m.Elif(c.is_status):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "PAYLOAD"
                abort_on_quiet_end()
            with m.State("PAYLOAD"):
                with m.If(got):
                    is_image = c.is_image
                    first = c.first_byte
                    m.d.comb += [crc.valid.eq(1), self.image.en.eq(is_image),
                                 self.o_weights.valid.eq(~is_image & ~first),
                                 self.weights_first.eq(~is_image & first & byte[0])]
                    m.d.sync += [c.count.eq(c.count + 1), c.left.eq(c.left - 1)]
                    with m.If(c.last_byte):
                        m.next = "CRC"
                abort_on_quiet_end()
            with m.State("CRC"):
                with m.If(got):
                    with m.If(~c.crc_ok):
                        reject(ErrorCode.BAD_CRC)
                    with m.Elif(~c.is_image):
                        m.d.comb += [self.request.valid.eq(1),
                                     self.request.payload.status.eq(1)]
                        m.next = "SYNC0"
                    with m.Elif(~self.weights_ready):
                        reject(ErrorCode.NO_WEIGHTS)
                    with m.Else():
                        m.d.comb += self.done.eq(1)
                        m.next = "SYNC0"
                abort_on_quiet_end()
        m.d.comb += self.in_frame.eq(~fsm.ongoing("SYNC0"))


class ImageBuffer(wiring.Component):
    """One image in a memory (block RAM on iCE40), written byte by byte through ``w`` and
    streamed out once per ``start``.

    ``busy`` rises the cycle after ``start``; ``o`` offers byte 0 one cycle later (with
    ``bank_words``: :attr:`first_byte_cycles` later) and then a byte in every cycle in which
    the one before was taken. After the last byte has been taken ``busy`` and ``o.valid`` fall
    and the next ``start`` streams the image again from byte 0. The buffer does not keep the
    writer and the stream apart: writes while ``busy`` change the image being sent.

    Without ``bank_words`` the read address runs ahead on a transfer (``o.ready`` chooses it),
    so back-pressure costs no bubble. With ``bank_words`` (ECP5: 2048, a ``DP16KD`` block of
    bytes) nothing combinational is in front of the memory or behind it: the memory is cut
    into banks of ``bank_words`` bytes (:class:`~cnnforge.hw.rtl.banked.BankedMemory`), the
    read address is a register, each bank's read data and the bank multiplexer's output are
    registered, and the bytes
    queue in a FIFO of :attr:`fifo_depth` entries that the reads never overfill (a read is
    issued only while a credit is left: one per free entry, returned when ``o`` takes a byte);
    the depth keeps a byte a cycle. Before, a large image's read was the block RAM's
    clock-to-out, the banks' multiplexer and the FIFO's write in one cycle.

    Parameters
    ----------
    image_size : int
        Bytes in an image, at least 1 (the memory has at least two words).
    bank_words : int or None
        Bytes per bank of the registered, banked read; None: the read address chosen by the
        transfer, the read data straight to ``o``.
    family : ``"ecp5"`` or None
        The banks' primitives (:class:`~cnnforge.hw.rtl.banked.BankedMemory`'s ``family``).

    Members
    -------
    w : Out(memory.WritePort.Signature(addr_width=ceil_log2(max(2, image_size)), shape=8))
        The memory's write port (``addr``, ``data``, ``en`` are inputs).
    start : In(1)
        Stream the image; only while ``busy`` is low.
    o : Out(stream.Signature(signed(8)))
        The image, bytes 0 to ``image_size - 1``.
    busy : Out(1)
        The image is being streamed.
    """

    def __init__(self, image_size, bank_words=None, family=None):
        if image_size < 1:
            self._MustUse__silence = True
            raise ValueError(f"an image has at least one byte, got {image_size}")
        self._image_size = image_size
        self._bank_words, self._family = bank_words, family
        super().__init__({
            "w": Out(_image_write_signature(image_size)),
            "start": In(1),
            "o": Out(stream.Signature(signed(8))),
            "busy": Out(1),
        })

    @property
    def image_size(self):
        """Bytes in an image."""
        return self._image_size

    @property
    def bank_words(self):
        """Bytes per bank of the banked form, or None (the direct form)."""
        return self._bank_words

    @property
    def read_latency(self):
        """Cycles from a read's address to its byte written into the FIFO (``bank_words``): the
        banked memory's read (:class:`~cnnforge.hw.rtl.banked.BankedMemory`), then its bank
        multiplexer's register."""
        return read_port_latency(True) + 1

    @property
    def fifo_depth(self):
        """Entries of the output FIFO (``bank_words``; its output registered:
        ``SyncFIFOBuffered``): a credit spends :attr:`read_latency` + 3 cycles from its read to
        the cycle after its byte was taken, so as many keep a byte a cycle."""
        return self.read_latency + 3

    @property
    def first_byte_cycles(self):
        """Cycles from ``start`` to byte 0 on ``o``."""
        return 2 if self._bank_words is None else self.read_latency + 3

    def elaborate(self, platform):
        m = Module()
        if self._bank_words is None:
            self._direct(m)
        else:
            self._banked(m)
        return m

    def _direct(self, m):
        """The read address chosen by the transfer, the memory's read data on ``o``."""
        n_in = self._image_size
        # the parser writes an image only while no image is streamed (the responder is busy)
        m.submodules.image = image = memory.Memory(shape=8, depth=max(2, n_in), init=[],
                                                   attrs=NO_RW_CHECK)
        wiring.connect(m, wiring.flipped(self.w), image.write_port())
        rd = image.read_port()
        rd_idx = Signal(range(max(2, n_in)))
        advance = self.o.valid & self.o.ready
        m.d.comb += [rd.addr.eq(Mux(advance, rd_idx + 1, rd_idx)), self.o.payload.eq(rd.data)]
        with m.If(self.start):
            m.d.sync += self.busy.eq(1)
        with m.If(self.busy & ~self.o.valid):
            m.d.sync += self.o.valid.eq(1)        # word 0 has been read: offer it
        with m.If(advance):
            m.d.sync += rd_idx.eq(rd_idx + 1)
            with m.If(rd_idx == n_in - 1):
                m.d.sync += [self.busy.eq(0), self.o.valid.eq(0), rd_idx.eq(0)]

    def _banked(self, m):
        """Banks read from a registered address, their data and multiplexer registered, the
        bytes queued in a FIFO the reads take credits of."""
        n_in = self._image_size
        m.submodules.image = image = BankedMemory(8, n_in, self._bank_words,
                                                  family=self._family)
        m.d.comb += [image.w_addr.eq(self.w.addr), image.w_data.eq(self.w.data),
                     image.w_en.eq(self.w.en)]
        rd_addr = Signal(range(max(2, n_in)))
        issuing = Signal()                          # bytes left to read
        credits = Signal(range(self.fifo_depth + 1), init=self.fifo_depth)
        issue = issuing & (credits != 0)
        m.submodules.fifo = out = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        take = out.r_rdy & self.o.ready
        data_q = Signal(8)
        m.d.comb += image.r_addr[0].eq(rd_addr)
        m.d.sync += data_q.eq(image.r_data[0])
        in_flight = []                              # the reads on their way to the FIFO
        for i in range(self.read_latency):
            in_flight.append(Signal(name=f"read_valid{i}"))
            m.d.sync += in_flight[-1].eq(in_flight[-2] if i else issue)
        valid = in_flight[-1]
        # what a proof states its invariant over (credits + queued + in flight = FIFO depth)
        self.reads = SimpleNamespace(credits=credits, issuing=issuing, next_addr=rd_addr,
                                     in_flight=in_flight, fifo=out)
        m.d.comb += [out.w_data.eq(data_q), out.w_en.eq(valid),
                     self.o.payload.eq(out.r_data), self.o.valid.eq(out.r_rdy),
                     out.r_en.eq(self.o.ready)]
        m.d.sync += credits.eq(credits - issue + take)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), issuing.eq(1)]
        with m.If(issue):
            m.d.sync += rd_addr.eq(rd_addr + 1)
            with m.If(rd_addr == n_in - 1):
                m.d.sync += [issuing.eq(0), rd_addr.eq(0)]
        # every byte read and taken: all credits back
        with m.If(self.busy & ~issuing & (credits + take == self.fifo_depth)):
            m.d.sync += self.busy.eq(0)


class Responder(wiring.Component):
    """Transmitter of the board's frames: an error frame, or a result frame whose header leaves
    while the engine computes.

    A request is taken into a register (so the parser's byte comparisons are not in front of the
    responder's state); the frame's first byte is offered on ``o`` two cycles after the request.
    The frame is SYNC0 SYNC1 TYPE LEN0 LEN1, then for an error its code, for a result the
    ``output_size`` logits as they come from ``logits`` (passed straight through: the engine
    waits while the transmitter is busy), the class (the index of the first largest logit, as
    ``numpy.argmax``, kept on the fly) and the four bytes of ``cycles`` (little endian), for a
    status the nine bytes of ``status``; then the CRC. ``busy`` falls once the CRC byte has
    left the line (``tx_busy`` low).

    Parameters
    ----------
    output_size : int
        Logits of a result (1 to 256: the class is one byte).

    Members
    -------
    request : In(stream.Signature(Request, always_ready=True))
        The frame to send; valid only while ``busy`` is low.
    logits : In(stream.Signature(signed(8)))
        The engine's output, taken only while a result's logits are being sent.
    cycles : In(32)
        The engine's cycle count, read while its bytes are sent (after the last logit).
    status : In(72)
        A status frame's payload (:func:`cnnforge.boards.protocol.encode_status`), byte 0 the
        lowest, read while its bytes are sent.
    o : Out(stream.Signature(8))
        The frame's bytes, to the UART transmitter.
    tx_busy : In(1)
        The UART transmitter is sending a byte.
    busy : Out(1)
        From the cycle after a request until the frame's last byte has been sent.
    computing : Out(1)
        From two cycles after a result request until its last logit has been taken.
    error : Out(1)
        Pulses the cycle after an error request (a frame was rejected).
    answered : Out(1)
        Pulses when a result frame has been sent completely.
    """

    def __init__(self, output_size):
        if not 1 <= output_size <= 256:
            self._MustUse__silence = True
            raise ValueError(f"the network has {output_size} outputs; a result frame carries 1 "
                             "to 256 logits (the class is one byte)")
        self._output_size = output_size
        super().__init__({
            "request": In(stream.Signature(Request, always_ready=True)),
            "logits": In(stream.Signature(signed(8))),
            "cycles": In(32),
            "status": In(72),
            "o": Out(stream.Signature(8)),
            "tx_busy": In(1),
            "busy": Out(1),
            "computing": Out(1),
            "error": Out(1),
            "answered": Out(1),
        })

    @property
    def output_size(self):
        """Logits of a result."""
        return self._output_size

    def elaborate(self, platform):
        m = Module()
        n_out = self._output_size
        m.submodules.crc = crc = CRC8()
        # the request registered (pending counts as busy)
        pending = Signal()
        request = Signal(Request)
        m.d.sync += [pending.eq(self.request.valid), request.eq(self.request.payload)]
        busy = Signal()                # from the request until the answer's last byte
        kind_error, kind_status = Signal(), Signal()
        code = Signal(8)
        out_idx = Signal(range(max(2, n_out)))
        best = Signal(signed(8))
        best_idx = Signal(8)
        length = Signal(16)
        # the CRC takes each checked byte a cycle after it left (registered: the output mux is
        # not in front of the CRC's XOR network); SETTLE waits for the last one
        crc_data, crc_valid = Signal(8), Signal()
        m.d.sync += [crc_data.eq(self.o.payload), crc_valid.eq(0)]
        # the running argmax likewise takes each logit a cycle after it left (ARGMAX waits for
        # the last); out_last (out_idx == n_out - 1) is kept one logit ahead
        logit, logit_idx, logit_first = crc_data.as_signed(), Signal(8), Signal()
        logit_valid, out_last = Signal(), Signal()
        m.d.sync += logit_valid.eq(0)
        with m.If(logit_valid & (logit_first | (logit > best))):
            m.d.sync += [best.eq(logit), best_idx.eq(logit_idx)]
        m.d.comb += [length.eq(Mux(kind_error, 1, Mux(kind_status, 9, n_out + 5))),
                     crc.data.eq(crc_data), crc.valid.eq(crc_valid),
                     self.busy.eq(busy | pending),
                     self.error.eq(pending & request.error)]

        def send(value, next_state, *, checked=True):
            m.d.comb += self.o.payload.eq(value)
            with m.If(self.o.ready):          # (valid in this state)
                if checked:
                    m.d.sync += crc_valid.eq(1)
                m.next = next_state

        with m.FSM(name="responder") as fsm:
            with m.State("IDLE"):
                with m.If(pending):
                    m.d.sync += [busy.eq(1), kind_error.eq(request.error), code.eq(request.code),
                                 kind_status.eq(request.status & ~request.error),
                                 self.computing.eq(~request.error & ~request.status),
                                 out_idx.eq(0), out_last.eq(n_out == 1)]
                    m.d.comb += crc.clear.eq(1)
                    m.next = "SYNC0"
            with m.State("SYNC0"):
                send(SYNC[0], "SYNC1", checked=False)
            with m.State("SYNC1"):
                send(SYNC[1], "TYPE", checked=False)
            with m.State("TYPE"):
                send(Mux(kind_error, MessageType.ERROR,
                         Mux(kind_status, MessageType.STATUS_REPLY, MessageType.RESULT)), "LEN0")
            with m.State("LEN0"):
                send(length[:8], "LEN1")
            with m.State("LEN1"):
                with m.If(kind_error):
                    send(length[8:], "CODE")
                with m.Elif(kind_status):
                    send(length[8:], "ST0")
                with m.Else():
                    send(length[8:], "LOGITS")
            for k in range(9):
                with m.State(f"ST{k}"):
                    send(self.status.word_select(k, 8), f"ST{k + 1}" if k < 8 else "SETTLE")
            with m.State("CODE"):
                send(code, "SETTLE")
            with m.State("LOGITS"):
                m.d.comb += [self.o.payload.eq(self.logits.payload),
                             self.logits.ready.eq(self.o.ready)]
                with m.If(self.logits.valid & self.o.ready):
                    m.d.sync += [crc_valid.eq(1), out_idx.eq(out_idx + 1),
                                 out_last.eq(out_idx == n_out - 2), logit_valid.eq(1),
                                 logit_idx.eq(out_idx), logit_first.eq(out_idx == 0)]
                    with m.If(out_last):
                        m.d.sync += self.computing.eq(0)
                        m.next = "ARGMAX"
            with m.State("ARGMAX"):
                m.next = "CLASS"
            with m.State("CLASS"):
                send(best_idx, "CYC0")
            for k in range(4):
                with m.State(f"CYC{k}"):
                    send(self.cycles.word_select(k, 8), f"CYC{k + 1}" if k < 3 else "SETTLE")
            with m.State("SETTLE"):
                m.next = "CRC"
            with m.State("CRC"):
                send(crc.crc, "DRAIN", checked=False)
            with m.State("DRAIN"):
                # the last byte is on the line: stay busy until it has been sent
                with m.If(~self.tx_busy):
                    m.d.sync += busy.eq(0)
                    m.d.comb += self.answered.eq(~kind_error & ~kind_status)
                    m.next = "IDLE"
        # o.valid from the five states that send none of the frame's own bytes (the one-hot
        # state's five bits, not an OR over the twenty that send: timing, the TX FIFO's level is
        # behind it); the engine's logits pass through in LOGITS
        quiet = [fsm.ongoing(name) for name in ("IDLE", "ARGMAX", "SETTLE", "DRAIN")]
        m.d.comb += self.o.valid.eq(Mux(fsm.ongoing("LOGITS"), self.logits.valid,
                                        ~Cat(*quiet).any()))
        return m


class HostLink(wiring.Component):
    """UART host link around an :class:`~cnnforge.hw.rtl.accelerator.Accelerator`.

    Built from :class:`~cnnforge.boards.uart.UARTRx`, :class:`FrameParser`,
    :class:`ImageBuffer`, the accelerator, :class:`Responder` and
    :class:`~cnnforge.boards.uart.UARTTx`, joined as in the module's diagram; the parser does
    not start a frame while the responder is busy.

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
    weights_ready : Out(1)
        The weights are there: in the bitstream, or loaded (SPRAM) and their CRC-32 equals the
        network's.
    loading : Out(1)
        The weights are being read from the SPI flash (after reset).
    spi : Out(SPI_SIGNATURE)
        Only with ``flash`` and SPRAM weights: the SPI flash pins.

    ``flash``: ``(offset, wake_cycles)`` of :class:`~cnnforge.boards.spi_flash.SPIFlashReader`
    (a design with SPRAM weights reads them from there after reset; the host can still upload
    others), or None.
    """

    def __init__(self, program, divisor, timeout, *, primitives=False, flash=None):
        self._MustUse__silence = True             # cleared below once the checks pass
        if timeout < 20 * divisor:
            raise ValueError(f"timeout of {timeout} cycles is shorter than two UART bytes "
                             f"({20 * divisor} cycles)")
        if program.image_size > 0xFFFF:
            raise ValueError(f"an image of {program.image_size} bytes does not fit a frame "
                             "(LEN is 16 bits)")
        self._MustUse__silence = False
        self._program = program
        self._primitives = primitives
        self._flash = flash if program.config.spram_weights else None
        self._divisor = divisor
        self._timeout = timeout
        members = {
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "busy": Out(1),
            "computing": Out(1),
            "error": Out(1),
            "answered": Out(1),
            "weights_ready": Out(1),
            "loading": Out(1),
        }
        if self._flash is not None:
            members["spi"] = Out(SPI_SIGNATURE)
        super().__init__(members)

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

    def _status(self, m, parser, accel):
        """The weights' hash and the status payload. SPRAM weights: the weight bytes (from the
        SPI flash after reset, then the parser's) go to the accelerator and through a CRC-32
        (restarted by a first chunk); images are taken once it equals the network's and the
        accelerator has every word. Weights in the bitstream: the ROM's hash, always ready."""
        prog = self._program
        image = weight_image(prog)
        network = weights_hash(image)
        if not prog.config.spram_weights:
            m.d.comb += [self.weights_ready.eq(1), parser.weights_ready.eq(1)]
            return Cat(Const(network, 32), Const(network, 32), Const(1, 8))
        data, valid = parser.o_weights.payload, parser.o_weights.valid
        first = parser.weights_first
        if self._flash is not None:
            offset, wake_cycles = self._flash
            m.submodules.flash = flash = SPIFlashReader(offset, len(image), wake_cycles)
            wiring.connect(m, flash.spi, wiring.flipped(self.spi))
            m.d.comb += self.loading.eq(flash.busy)
            data = Mux(flash.busy, flash.o_data.payload, data)
            valid, first = valid | flash.o_data.valid, first | flash.first
        # the bytes registered on their way to the weight memory and the CRC (the SPRAM blocks
        # sit in the die's corners: the route there gets a cycle of its own)
        data_q, valid_q, first_q = Signal(8), Signal(), Signal()
        m.d.sync += [data_q.eq(data), valid_q.eq(valid), first_q.eq(first)]
        m.submodules.weights_crc = crc32 = crc.catalog.CRC32_ISO_HDLC(data_width=8).create()
        m.d.comb += [accel.i_weights.payload.eq(data_q), accel.i_weights.valid.eq(valid_q),
                     accel.weights_restart.eq(first_q),
                     crc32.start.eq(first_q), crc32.data.eq(data_q), crc32.valid.eq(valid_q),
                     parser.weights_ready.eq(self.weights_ready)]
        # registered: the 32-bit compare stays out of the parser's decisions
        m.d.sync += self.weights_ready.eq((crc32.crc == network) & accel.weights_loaded)
        return Cat(crc32.crc, Const(network, 32), self.weights_ready, Const(1, 7))

    def elaborate(self, platform):
        m = Module()
        prog = self._program
        m.submodules.uart_rx = urx = UARTRx(self._divisor)
        m.submodules.parser = parser = FrameParser(prog.image_size, self._timeout,
                                                   weights=prog.config.spram_weights)
        # ECP5: the banked, registered read (a large image spans many DP16KD blocks, a small
        # one's LUT RAM read is no longer behind the transfer's address multiplexer)
        bank_words = (MEMORY_FAMILIES["ecp5"].block_bytes if self._primitives == "ecp5"
                      else None)
        m.submodules.image_buffer = image = ImageBuffer(prog.image_size, bank_words,
                                                        family=self._primitives or None)
        # no debug records on a board: no performance counters
        m.submodules.accel = accel = Accelerator(prog, primitives=self._primitives,
                                                 perf_counters=False)
        m.submodules.responder = responder = Responder(prog.output_size)
        m.submodules.uart_tx = utx = UARTTx(self._divisor)
        # a registered byte between the responder and the transmitter: the responder's output
        # mux and the transmitter's load enables each get a cycle of their own
        m.submodules.tx_fifo = tx_fifo = fifo.SyncFIFO(width=8, depth=1)
        # and one between the engine and the responder (its argmax compare and CRC)
        m.submodules.logits_fifo = logits_fifo = fifo.SyncFIFO(width=8, depth=1)
        # and two between the image buffer and the engine (a large buffer's block RAM output
        # multiplexer and the feature map's write data each get a cycle; two entries keep a
        # byte a cycle)
        m.submodules.image_fifo = image_fifo = fifo.SyncFIFO(width=8, depth=2)
        wiring.connect(m, urx.o, parser.i)
        wiring.connect(m, parser.image, image.w)
        m.d.comb += [image_fifo.w_data.eq(image.o.payload), image_fifo.w_en.eq(image.o.valid),
                     image.o.ready.eq(image_fifo.w_rdy),
                     accel.i_image.payload.eq(image_fifo.r_data),
                     accel.i_image.valid.eq(image_fifo.r_rdy),
                     image_fifo.r_en.eq(accel.i_image.ready)]
        wiring.connect(m, parser.request, responder.request)
        m.d.comb += [logits_fifo.w_data.eq(accel.o_logits.payload),
                     logits_fifo.w_en.eq(accel.o_logits.valid),
                     accel.o_logits.ready.eq(logits_fifo.w_rdy),
                     responder.logits.payload.eq(logits_fifo.r_data),
                     responder.logits.valid.eq(logits_fifo.r_rdy),
                     logits_fifo.r_en.eq(responder.logits.ready)]
        wiring.connect(m, responder.o, tx_fifo.w_stream)
        wiring.connect(m, tx_fifo.r_stream, utx.i)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            parser.framing_error.eq(urx.framing_error),
            parser.hold.eq(responder.busy | self.loading),
            image.start.eq(parser.done),
            responder.cycles.eq(accel.cycles), responder.tx_busy.eq(utx.busy | tx_fifo.r_rdy),
            accel.debug.eq(0), accel.o_debug.ready.eq(1),
            responder.status.eq(self._status(m, parser, accel)),
            self.busy.eq(responder.busy | parser.in_frame | image.busy | self.loading),
            self.computing.eq(responder.computing), self.error.eq(responder.error),
            self.answered.eq(responder.answered),
        ]
        return m
