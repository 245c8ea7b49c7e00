"""The host link's blocks (``cnnforge.boards.hostlink``) in the Amaranth simulator.

Each block is wrapped in a plain function (``rtl_crc8``, ``rtl_parse``, ``rtl_image_buffer``,
``rtl_respond``) and compared with :mod:`cnnforge.boards.protocol` (the host's side of the wire
format) or with a reference written here from the protocol's rules, on hand-picked edge cases
and on random streams (hypothesis). The whole link, with the accelerator and the UART, runs in
``test_top.py``.
"""

import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnforge.boards import protocol
from cnnforge.boards.hostlink import CRC8, FrameParser, HostLink, ImageBuffer, Responder
from cnnforge.boards.protocol import SYNC, ErrorCode, MessageType
from cnnforge.boards.uart import UARTTx

TIMEOUT = 40
FRAMING = "framing error"            # a cycle of rtl_parse's line: the UART dropped a byte


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# ------------------------------------------------------------------------------------------------
# CRC8


def rtl_crc8(steps):
    """Drive a CRC8 with ``steps`` (one per cycle: a byte, ``"clear"``, or None for a cycle with
    neither); return ``crc`` as seen in the cycle after each step."""
    dut = CRC8()
    out = []

    async def bench(ctx):
        for step in steps:
            ctx.set(dut.clear, step == "clear")
            ctx.set(dut.valid, isinstance(step, int))
            ctx.set(dut.data, step if isinstance(step, int) else 0)
            await ctx.tick()
            out.append(ctx.get(dut.crc))

    _run(dut, bench)
    return out


def test_crc8_matches_protocol():
    data = b"123456789" + bytes([0x00, 0xFF, 0x80, 0x01]) + bytes(range(0, 256, 5))
    got = rtl_crc8(list(data))
    assert got == [protocol.crc8(data[:k + 1]) for k in range(len(data))]
    assert got[8] == 0xF4                                # the catalogue check value


def test_crc8_holds_and_clears():
    """No ``valid``: the CRC holds; ``clear`` restarts at 0, and wins over a byte in the same
    cycle."""
    dut = CRC8()
    seen = []

    async def bench(ctx):
        for clear, valid, byte in [(0, 1, 0x31), (0, 0, 0x77), (0, 0, 0), (1, 1, 0x32),
                                   (0, 1, 0x33)]:
            ctx.set(dut.clear, clear)
            ctx.set(dut.valid, valid)
            ctx.set(dut.data, byte)
            await ctx.tick()
            seen.append(ctx.get(dut.crc))

    _run(dut, bench)
    c1 = protocol.crc8(b"1")
    assert seen == [c1, c1, c1, 0, protocol.crc8(b"3")]


# ------------------------------------------------------------------------------------------------
# FrameParser


@dataclass
class ParseTrace:
    """What a FrameParser did: ``requests`` as ``(cycle, code)`` (code None: a result,
    ``"status"``: a status), the cycles of the ``done`` pulses, ``images`` the buffer's first
    ``image_size`` bytes at each ``done``, ``in_frame`` per cycle, ``weights`` the bytes on
    ``o_weights`` with ``"first"`` where ``weights_first`` pulsed."""

    requests: list = field(default_factory=list)
    done: list = field(default_factory=list)
    images: list = field(default_factory=list)
    in_frame: list = field(default_factory=list)
    weights: list = field(default_factory=list)


def line(data, gap=1):
    """The parser's input for ``data``: each byte for one cycle, then ``gap`` cycles without
    (a UART delivers a byte every 10 bit times; the parser takes them two cycles apart)."""
    out = []
    for byte in bytes(data):
        out += [byte] + [None] * gap
    return out


def rtl_parse(cycles, image_size, *, timeout=TIMEOUT, hold=(), weights=False,
              weights_ready=True):
    """Run a FrameParser over ``cycles`` (one entry per clock: a byte, None for no byte, or
    :data:`FRAMING`), with ``hold`` high in the cycles listed; record what it did."""
    dut = FrameParser(image_size, timeout, weights=weights)
    trace = ParseTrace()
    buffer = {}
    hold = set(hold)

    async def bench(ctx):
        for t, item in enumerate(cycles):
            byte = item if isinstance(item, int) else None
            ctx.set(dut.i.valid, byte is not None)
            if byte is not None:                 # held until the next byte, as a UART's
                ctx.set(dut.i.payload, byte)
            ctx.set(dut.framing_error, item is FRAMING)
            ctx.set(dut.hold, t in hold)
            ctx.set(dut.weights_ready, weights_ready)
            trace.in_frame.append(ctx.get(dut.in_frame))
            if ctx.get(dut.weights_first):
                trace.weights.append("first")
            if ctx.get(dut.o_weights.valid):
                trace.weights.append(ctx.get(dut.o_weights.payload))
            if ctx.get(dut.image.en):
                buffer[ctx.get(dut.image.addr)] = ctx.get(dut.image.data)
            if ctx.get(dut.request.valid):
                error = ctx.get(dut.request.payload.error)
                code = ctx.get(dut.request.payload.code)
                status = ctx.get(dut.request.payload.status)
                trace.requests.append((t, ErrorCode(code) if error else
                                       "status" if status else None))
                assert error or code == 0
            if ctx.get(dut.done):
                trace.done.append(t)
                trace.images.append(bytes(buffer.get(k, 0) for k in range(image_size)))
            await ctx.tick()

    _run(dut, bench)
    assert [t for t, code in trace.requests if code is None] == trace.done
    return trace


def _length_ok(type_, length, image_size):
    if type_ == MessageType.IMAGE:
        return length == image_size
    if type_ == MessageType.WEIGHTS:
        return 2 <= length <= protocol.WEIGHT_CHUNK + 1
    return length == 0


def ref_parse(data, image_size, weights=False, weights_ready=True):
    """Reference from the protocol's rules, for a stream of bytes with no idle time: the answers
    the board owes, as ``(index of the deciding byte, code or None, payload of a result)``."""
    data = bytes(data)
    out, k = [], 0
    while k < len(data):
        if data[k] != SYNC[0]:                          # hunting
            k += 1
            continue
        k += 1
        while k < len(data) and data[k] == SYNC[0]:     # SYNC0 repeated: still a start
            k += 1
        if k == len(data):
            break
        if data[k] != SYNC[1]:                          # noise: hunt from the next byte
            k += 1
            continue
        body = k + 1                                    # TYPE
        if body >= len(data):
            break                                       # undecided at the end of the stream
        type_ = data[body]
        if type_ not in (MessageType.IMAGE, MessageType.STATUS) + (
                (MessageType.WEIGHTS,) if weights else ()):
            out.append((body, ErrorCode.BAD_TYPE, None))
            k = body + 1
            continue
        if body + 2 >= len(data):
            break
        length = data[body + 1] | data[body + 2] << 8
        if not _length_ok(type_, length, image_size):
            out.append((body + 2, ErrorCode.BAD_LENGTH, None))
            k = body + 3
            continue
        end = body + 3 + length                         # the CRC byte
        if end >= len(data):
            break
        payload = data[body + 3:end]
        if protocol.crc8(data[body:end]) != data[end]:
            out.append((end, ErrorCode.BAD_CRC, None))
        elif type_ != MessageType.IMAGE:
            out.append((end, "status", payload))
        elif not weights_ready:
            out.append((end, ErrorCode.NO_WEIGHTS, None))
        else:
            out.append((end, None, payload))
        k = end + 1
    return out


def check_parse(data, image_size, gap=1, **options):
    """The parser against :func:`ref_parse` (byte by byte, ``gap`` idle cycles apart; each
    answer the cycle after its byte)."""
    trace = rtl_parse(line(data, gap) + [None] * 3, image_size, timeout=1000, **options)
    expected = ref_parse(data, image_size, **options)
    assert trace.requests == [(k * (gap + 1) + 1, code) for k, code, _ in expected]
    assert trace.images == [payload for _, code, payload in expected if code is None]
    return trace


IMAGE = bytes([0x00, 0xA5, 0x5A, 0xFF, 0x80])


def image_frame(payload=IMAGE):
    return protocol.encode_frame(MessageType.IMAGE, payload)


@pytest.mark.parametrize("gap", [1, 5])
def test_parser_accepts_a_good_frame(gap):
    frame = image_frame()
    trace = check_parse(frame, len(IMAGE), gap)
    # the answer the cycle after the CRC byte, the image in the buffer by then
    assert trace.requests == [((len(frame) - 1) * (gap + 1) + 1, None)]
    assert trace.images == [IMAGE]
    # in a frame from two cycles after SYNC0 through the cycle after the CRC byte
    assert trace.in_frame.index(1) == 2
    assert sum(trace.in_frame) == (len(frame) - 1) * (gap + 1)


def test_parser_rejects_bad_fields():
    """Each error at the byte that decides it; the next good frame is accepted. (After an
    early error the parser hunts in the rest of the frame: SYNC0 SYNC1 in the payload starts
    another frame, as :func:`ref_parse` says.)"""
    good = image_frame()
    flipped = bytearray(good)
    flipped[7] ^= 0x04                                  # a payload bit
    wrong_crc = bytearray(good)
    wrong_crc[-1] ^= 0xFF
    cases = [
        (bytes(flipped), ErrorCode.BAD_CRC, len(good) - 1),
        (bytes(wrong_crc), ErrorCode.BAD_CRC, len(good) - 1),
        (protocol.encode_frame(0x42, IMAGE), ErrorCode.BAD_TYPE, 2),
        (protocol.encode_frame(MessageType.RESULT, IMAGE), ErrorCode.BAD_TYPE, 2),
        (protocol.encode_frame(MessageType.IMAGE, IMAGE[:-1]), ErrorCode.BAD_LENGTH, 4),
        (protocol.encode_frame(MessageType.IMAGE, IMAGE + bytes(256)), ErrorCode.BAD_LENGTH,
         4),
    ]
    for frame, code, at in cases:
        trace = check_parse(frame + good, len(IMAGE))
        assert trace.requests[0] == (2 * at + 1, code)
        assert trace.requests[-1] == (2 * (len(frame) + len(good) - 1) + 1, None)
        assert trace.images == [IMAGE]


def test_parser_skips_noise():
    """Bytes before SYNC0, a SYNC0 followed by noise, repeated SYNC0s: no answer until the
    frame, whose image is the one stored."""
    noise = bytes([0x00, 0x5A, 0xFF, 0xA5, 0x13, 0xA5, 0xA5, 0xA5])
    trace = check_parse(noise + image_frame(), len(IMAGE))
    assert trace.requests == [(2 * (len(noise) + len(image_frame()) - 1) + 1, None)]


def test_parser_one_byte_image():
    trace = check_parse(image_frame(b"\x7f") + image_frame(b"\x80"), 1)
    assert trace.images == [b"\x7f", b"\x80"]


def test_parser_times_out():
    """A frame cut short is answered ``timeout + 2`` cycles after its last byte (the parser
    sees it a cycle late); a long idle line while hunting is not an error."""
    cut = image_frame()[:6]
    trace = rtl_parse([None] * 3 * TIMEOUT + line(cut, 3) + [None] * 2 * TIMEOUT, len(IMAGE))
    last = 3 * TIMEOUT + 4 * (len(cut) - 1)
    assert trace.requests == [(last + TIMEOUT + 2, ErrorCode.TIMEOUT)]
    assert not trace.in_frame[last + TIMEOUT + 3]
    # a lone SYNC0 starts a frame as far as the timeout is concerned
    trace = rtl_parse([SYNC[0]] + [None] * 2 * TIMEOUT, len(IMAGE))
    assert trace.requests == [(TIMEOUT + 2, ErrorCode.TIMEOUT)]
    # a byte every TIMEOUT cycles keeps a frame alive
    trace = rtl_parse(line(image_frame(), TIMEOUT - 1) + [None] * 3, len(IMAGE))
    assert trace.requests == [(TIMEOUT * (len(image_frame()) - 1) + 1, None)]


@pytest.mark.parametrize("timeout", [1, 2, 3, 7, 8, 9])
def test_parser_timeout_counts(timeout):
    """The idle count's end is its top bit (counted from 2**k − timeout): short timeouts and
    those next to a power of two end the frame ``timeout + 2`` cycles after its SYNC0."""
    trace = rtl_parse([SYNC[0]] + [None] * (2 * timeout + 4), len(IMAGE), timeout=timeout)
    assert trace.requests == [(timeout + 2, ErrorCode.TIMEOUT)]


def test_parser_framing_error():
    """A framing error in a frame rejects it the cycle after; while hunting it is ignored."""
    frame = image_frame()
    cycles = [FRAMING] + line(frame[:7], 1) + [FRAMING] + [None] * 3 + line(frame, 1) + [None]
    trace = rtl_parse(cycles, len(IMAGE))
    assert trace.requests == [(16, ErrorCode.FRAMING), (20 + 2 * (len(frame) - 1), None)]
    assert trace.images == [IMAGE]


def test_parser_hold():
    """No frame starts while ``hold`` is high; one already started ends normally."""
    frame = image_frame()
    cycles = line(frame, 1) + line(frame, 1) + [None]
    n = 2 * len(frame)
    held = rtl_parse(cycles, len(IMAGE), hold=range(n))                # first SYNC0 ignored
    assert held.requests == [(2 * n - 1, None)]
    late = rtl_parse(cycles, len(IMAGE), hold=range(1, 2 * n + 1))    # from after SYNC0 on
    assert late.requests == [(n - 1, None)]


@st.composite
def byte_streams(draw):
    """Frames good and bad, noise biased to the sync bytes, in any order."""
    size = draw(st.integers(1, 4))
    pieces = []
    for _ in range(draw(st.integers(1, 6))):
        payload = draw(st.binary(min_size=size, max_size=size))
        kind = draw(st.sampled_from(["good", "flip", "type", "length", "noise", "cut",
                                     "status", "weights"]))
        frame = bytearray(image_frame(payload))
        if kind == "status":
            frame = bytearray(protocol.encode_status_request())
        elif kind == "weights":
            frame = bytearray(protocol.encode_frame(MessageType.WEIGHTS,
                                                    draw(st.binary(max_size=4))))
        if kind == "flip":
            index = draw(st.integers(2, len(frame) - 1))
            frame[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "type":
            frame = protocol.encode_frame(draw(st.integers(0, 255)), payload)
        elif kind == "length":
            frame = protocol.encode_frame(MessageType.IMAGE, draw(st.binary(max_size=size + 2)))
        elif kind == "noise":
            frame = draw(st.lists(st.sampled_from([0xA5, 0x5A, 0x01, 0x00, 0xFF]), max_size=5))
        elif kind == "cut":
            frame = frame[:draw(st.integers(0, len(frame) - 1))]
        pieces.append(bytes(frame))
    return b"".join(pieces), size


@settings(max_examples=60, deadline=None)
@given(byte_streams(), st.sampled_from([1, 2]), st.booleans(), st.booleans())
def test_parser_random_streams(stream, gap, weights, weights_ready):
    """Any stream of frames, good and bad, images, status and weights frames (taken only by a
    parser with ``weights``), the weights loaded or not."""
    data, size = stream
    check_parse(data, size, gap, weights=weights, weights_ready=weights_ready)


def test_parser_weights_frames():
    """A weights frame's flag byte pulses ``weights_first`` (bit 0 set) and its other bytes go
    out on ``o_weights`` as they arrive; the frame is answered with a status. An image while
    the weights are not ready is refused with ``NO_WEIGHTS``."""
    image = bytes(range(7))
    frames = protocol.weight_frames(image, chunk=4)
    data = b"".join(frames) + protocol.encode_status_request() + image_frame()
    trace = check_parse(data, len(IMAGE), weights=True, weights_ready=False)
    assert trace.weights == ["first", 0, 1, 2, 3, 4, 5, 6]
    assert [code for _, code in trace.requests] == ["status"] * 3 + [ErrorCode.NO_WEIGHTS]
    without = check_parse(frames[0], len(IMAGE))
    assert without.requests[0][1] == ErrorCode.BAD_TYPE and without.weights == []


def test_parser_checks_parameters():
    with pytest.raises(ValueError, match="65536 bytes does not fit"):
        FrameParser(0x10000, TIMEOUT)
    with pytest.raises(ValueError, match="an image of 0 bytes"):
        FrameParser(0, TIMEOUT)
    with pytest.raises(ValueError, match="timeout must be at least 1"):
        FrameParser(4, 0)


# ------------------------------------------------------------------------------------------------
# ImageBuffer


def rtl_image_buffer(image, *, starts=2, ready_seed=None, bank_words=None):
    """Write ``image`` into an ImageBuffer (``bank_words``: its banked form), then stream it
    ``starts`` times (``o.ready`` always high, or random from ``ready_seed``); return the bytes
    taken, per stream a per-cycle trace ``(start, busy, valid, transfer)`` from ``start`` to
    the cycle after the last transfer, and the buffer's ``first_byte_cycles``."""
    dut = ImageBuffer(len(image), bank_words)
    rng = random.Random(ready_seed)
    got, traces = [], []

    async def bench(ctx):
        ctx.set(dut.w.en, 1)
        for k, byte in enumerate(image):
            ctx.set(dut.w.addr, k)
            ctx.set(dut.w.data, byte)
            await ctx.tick()
        ctx.set(dut.w.en, 0)
        for _ in range(starts):
            trace, taken = [], 0
            ctx.set(dut.start, 1)
            while taken < len(image):
                ready = rng.random() < 0.6 if ready_seed is not None else True
                ctx.set(dut.o.ready, ready)
                valid = ctx.get(dut.o.valid)
                if valid and ready:
                    got.append(ctx.get(dut.o.payload) & 0xFF)
                    taken += 1
                trace.append((ctx.get(dut.start), ctx.get(dut.busy), valid, valid and ready))
                await ctx.tick()
                ctx.set(dut.start, 0)
            trace.append((0, ctx.get(dut.busy), ctx.get(dut.o.valid), 0))
            traces.append(trace)

    _run(dut, bench)
    return bytes(got), traces, dut.first_byte_cycles


#: (image bytes, bank_words): the direct form; the banked form with one bank, with banks of
#: 4 bytes (the last one short), and with banks of 2 bytes
IMAGE_FORMS = [(6, None), (6, 2048), (7, 4), (9, 2)]


@pytest.mark.parametrize("size, bank_words", IMAGE_FORMS)
def test_image_buffer_streams_with_no_bubble(size, bank_words):
    image = bytes([0x00, 0xA5, 0xFF, 0x80, 0x7F, 0x01, 0x55, 0xC3, 0x3C][:size])
    got, traces, lead = rtl_image_buffer(image, starts=2, bank_words=bank_words)
    assert got == image * 2
    for trace in traces:
        start, busy, valid, transfer = (list(col) for col in zip(*trace))
        # busy the cycle after start, byte 0 offered first_byte_cycles after start (2 in the
        # direct form), then one byte per cycle; busy and valid fall after the last transfer
        assert start == [1] + [0] * (len(image) + lead)
        assert busy == [0] + [1] * (len(image) + lead - 1) + [0]
        assert valid == [0] * lead + [1] * len(image) + [0]
        assert transfer == valid


@pytest.mark.parametrize("size,seed", [(1, 1), (2, 2), (7, 3), (64, 4)])
@pytest.mark.parametrize("bank_words", [None, 2048, 4, 2])
def test_image_buffer_under_backpressure(size, seed, bank_words):
    image = bytes(random.Random(seed).randrange(256) for _ in range(size))
    got, traces, _ = rtl_image_buffer(image, starts=3, ready_seed=seed, bank_words=bank_words)
    assert got == image * 3
    for trace in traces:
        assert all(busy for _, busy, valid, _ in trace if valid)
        assert trace[-1][1:3] == (0, 0)


def test_image_buffer_checks_parameters():
    with pytest.raises(ValueError, match="at least one byte, got 0"):
        ImageBuffer(0)


# ------------------------------------------------------------------------------------------------
# Responder


@dataclass
class RespondTrace:
    """What a Responder did: the bytes it sent, and the cycles (counted from the request) of
    its ``error`` and ``answered`` pulses and of ``busy`` and ``computing``."""

    data: bytes
    first_byte: int
    error: list
    answered: list
    busy: list
    computing: list
    last_logit: int


def rtl_respond(code=None, logits=(), cycles=0, *, divisor=1, logit_seed=None, status=None):
    """Ask a Responder for an error frame (``code``) or a result frame (``code`` None) whose
    ``logits`` come from a source that is valid at random (``logit_seed``) or always; the bytes go
    through a UARTTx with ``divisor``."""
    dut = Responder(max(1, len(logits)))
    m = Module()
    m.submodules.dut = dut
    m.submodules.utx = utx = UARTTx(divisor)
    m.d.comb += [utx.i.payload.eq(dut.o.payload), utx.i.valid.eq(dut.o.valid),
                 dut.o.ready.eq(utx.i.ready), dut.tx_busy.eq(utx.busy), dut.cycles.eq(cycles),
                 dut.status.eq(int.from_bytes(status or bytes(9), "little"))]
    rng = random.Random(logit_seed)
    sent, marks = [], {"error": [], "answered": [], "busy": [], "computing": []}
    first, taken = [], []

    async def bench(ctx):
        ctx.set(dut.request.valid, 1)
        ctx.set(dut.request.payload, {"error": code is not None, "code": int(code or 0),
                                      "status": status is not None})
        await ctx.tick()
        ctx.set(dut.request.valid, 0)
        ctx.set(dut.request.payload, {"error": 0, "code": 0})
        index, t = 0, 1
        while t < 10 or ctx.get(dut.busy):
            valid = index < len(logits) and (logit_seed is None or rng.random() < 0.5)
            ctx.set(dut.logits.valid, valid)
            ctx.set(dut.logits.payload, logits[index] if index < len(logits) else 0)
            if valid and ctx.get(dut.logits.ready):
                index += 1
                taken.append(t)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                sent.append(ctx.get(dut.o.payload))
                first.append(t)
            for name in marks:
                if ctx.get(getattr(dut, name)):
                    marks[name].append(t)
            await ctx.tick()
            t += 1
            assert t < 100_000, "the responder never finished"

    _run(m, bench)
    assert len(taken) == len(logits)
    return RespondTrace(bytes(sent), first[0], last_logit=(taken or [None])[-1], **marks)


@pytest.mark.parametrize("weights, network, runtime", [(0x12345678, 0x12345678, True),
                                                       (0, 0xCBF43926, True), (7, 7, False)])
def test_responder_status_frame(weights, network, runtime):
    """A status request is answered with the status frame of ``status``'s nine bytes; it is
    neither an error nor a result."""
    frame = protocol.encode_status(weights, network, runtime)
    trace = rtl_respond(status=frame[5:14], divisor=2)
    assert trace.data == frame
    assert protocol.parse_status(*protocol.decode_frame(trace.data)) == protocol.Status(
        weights, network, weights == network, runtime)
    assert not trace.error and not trace.answered and not trace.computing


@pytest.mark.parametrize("code", list(ErrorCode))
def test_responder_error_frame(code):
    trace = rtl_respond(code)
    assert trace.data == protocol.encode_error(code)
    assert trace.error == [1] and trace.answered == [] and trace.computing == []
    assert trace.first_byte == 2                    # two cycles after the request
    # busy from the cycle after the request until the CRC byte has left the line
    assert trace.busy == list(range(1, trace.busy[-1] + 1))


@pytest.mark.parametrize("logits,cls", [
    ([1, 7, 3, 7, -128, 0, 0, 0, 0, 0], 1),         # the first of equal maxima
    ([-128] * 10, 0),
    ([-5, -4, -3, -2, -1, 0, 1, 2, 3, 127], 9),
    ([42], 0),
])
def test_responder_result_frame(logits, cls):
    trace = rtl_respond(None, logits, cycles=0x12345678, divisor=2)
    assert trace.data == protocol.encode_result(logits, 0x12345678)
    assert trace.data[5 + len(logits)] == cls
    assert trace.error == [] and len(trace.answered) == 1
    assert trace.busy == list(range(1, trace.answered[0] + 1))
    assert trace.computing == list(range(2, trace.last_logit + 1))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-128, 127), min_size=1, max_size=12), st.integers(0, 2**32 - 1),
       st.integers(0, 1000), st.sampled_from([1, 3]))
def test_responder_random_results(logits, cycles, seed, divisor):
    trace = rtl_respond(None, logits, cycles, divisor=divisor, logit_seed=seed)
    result = protocol.parse_result(*protocol.decode_frame(trace.data), len(logits))
    assert result.logits.tolist() == logits
    assert result.cls == int(np.argmax(logits)) and result.cycles == cycles


def test_responder_checks_parameters():
    with pytest.raises(ValueError, match="has 257 outputs"):
        Responder(257)
    with pytest.raises(ValueError, match="has 0 outputs"):
        Responder(0)


# ------------------------------------------------------------------------------------------------
# HostLink


def test_hostlink_checks_parameters():
    """The checks come before the accelerator is built, so a stand-in program does."""
    program = SimpleNamespace(image_size=64, output_size=10)
    with pytest.raises(ValueError, match="shorter than two UART bytes"):
        HostLink(program, 100, 1999)
    with pytest.raises(ValueError, match="65536 bytes does not fit a frame"):
        HostLink(SimpleNamespace(image_size=0x10000, output_size=10), 100, 2000)
