"""The UART host-link protocol, host side: frame encoding, an incremental decoder, the messages.

Used by the host runtime (:mod:`cnnforge.boards.runtime`), by the board-emulating tests and by
the cocotb test of the board top, so the host and the gateware (:mod:`cnnforge.boards.hostlink`)
are checked against one definition.

Frame (every field one byte unless noted)::

    SYNC0 = 0xA5 | SYNC1 = 0x5A | TYPE | LEN (2 bytes, little endian) | PAYLOAD (LEN bytes) | CRC

CRC is CRC-8 with polynomial x^8 + x^2 + x + 1 (0x07), initial value 0, no reflection, no final
XOR ("CRC-8/SMBUS"), over TYPE, LEN and PAYLOAD. It detects every error burst of up to 8 bits,
so any single corrupted byte.

Messages:

=================  ======  =================================================================
message            TYPE    payload
=================  ======  =================================================================
image (host)       0x01    ``image_size`` int8 values, C, H, W order (quantized input)
weights (host)     0x02    one flag byte (bit 0: the first chunk, the upload starts again at
                           weight byte 0), then the next bytes of the weight image
                           (:func:`cnnforge.hw.compiler.program.weight_image`), 1 to
                           :data:`WEIGHT_CHUNK`; answered with a status
status (host)      0x03    empty: asks for the status
result (board)     0x81    ``output_size`` int8 logits, the class (uint8: first index of the
                           largest logit, as ``numpy.argmax``), engine cycles (uint32, LE)
status (board)     0x83    the weights' hash (uint32, LE: CRC-32 of the weight bytes received
                           since the last first chunk; of the weight ROM on a board that holds
                           its weights in the bitstream), the network's hash (uint32, LE), flags
                           (bit 0: the hashes match, images are taken; bit 1: the weights are
                           loaded at run time)
error (board)      0xEE    one byte: an :class:`ErrorCode`
=================  ======  =================================================================

A board whose weights are in SPRAM (``AcceleratorConfig.spram_weights``) starts without them:
it answers an image with ``NO_WEIGHTS`` until the host has sent the whole weight image in
weights frames, in order (:func:`weight_frames`), and the hash matches the network's. A weights
frame that fails (bad CRC, timeout) leaves a hash that cannot match: the host sends the image
again from the first chunk. The hash is CRC-32 (ISO-HDLC, as ``zlib.crc32``).

The board answers every complete frame: an image frame with a result, a frame with a bad CRC,
an unknown TYPE or a LEN that does not match the type with an error; a frame cut short (the line
idle for longer than the board's timeout in the middle of a frame) is answered with an error as
well. After an error the board hunts for the next SYNC0 SYNC1 pair, so the link resynchronizes
by itself. The host sends one frame and waits for its answer before sending the next; bytes
that arrive while the board is busy with a frame are discarded.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SYNC", "ImageTooLarge", "MessageType", "ErrorCode", "Result", "LinkError",
    "crc8", "encode_frame", "encode_image", "encode_result", "encode_error", "FrameDecoder",
    "decode_frame", "parse_result", "WEIGHT_CHUNK", "Status", "weight_frames",
    "encode_status_request", "encode_status", "parse_status", "weights_hash",
]

SYNC = bytes([0xA5, 0x5A])
HEADER_SIZE = 5          # SYNC0 SYNC1 TYPE LEN0 LEN1
MAX_PAYLOAD = 0xFFFF


#: Most weight-image bytes in one weights frame (the frame's payload is one more, the flags).
WEIGHT_CHUNK = 1024


class MessageType(enum.IntEnum):
    IMAGE = 0x01
    WEIGHTS = 0x02
    STATUS = 0x03
    RESULT = 0x81
    STATUS_REPLY = 0x83
    ERROR = 0xEE


class ErrorCode(enum.IntEnum):
    """Why the board rejected a frame."""
    BAD_CRC = 1          #: the CRC byte did not match
    BAD_TYPE = 2         #: unknown TYPE
    BAD_LENGTH = 3       #: LEN does not match the TYPE (an image has exactly image_size bytes)
    TIMEOUT = 4          #: the line went idle in the middle of a frame
    FRAMING = 5          #: a UART stop bit was low in the middle of a frame (wrong baud rate?)
    NO_WEIGHTS = 6       #: an image before the weights were loaded (SPRAM weights)


class LinkError(RuntimeError):
    """The link or the board failed (an error frame, a timeout, a malformed answer)."""


class ImageTooLarge(ValueError):
    """An image longer than a frame can carry."""


_CRC_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x07) & 0xFF if _crc & 0x80 else (_crc << 1) & 0xFF
    _CRC_TABLE.append(_crc)


def crc8(data, crc=0):
    """CRC-8/SMBUS (polynomial 0x07, init 0) of ``data``, continuing from ``crc``."""
    for byte in bytes(data):
        crc = _CRC_TABLE[crc ^ byte]
    return crc


def encode_frame(type_, payload=b""):
    """One frame: sync, TYPE, LEN, PAYLOAD, CRC."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ImageTooLarge(f"payload of {len(payload)} bytes: a frame carries at most "
                            f"{MAX_PAYLOAD}")
    body = bytes([int(type_), len(payload) & 0xFF, len(payload) >> 8]) + payload
    return SYNC + body + bytes([crc8(body)])


def encode_image(image):
    """An image frame from an int8 image (any shape; sent in C, H, W order)."""
    image = np.asarray(image)
    if image.dtype != np.int8:
        raise TypeError(f"image must be int8 (quantized), got {image.dtype}")
    return encode_frame(MessageType.IMAGE, image.reshape(-1).view(np.uint8).tobytes())


@dataclass(frozen=True)
class Result:
    """The board's answer to an image.

    Members
    -------
    logits : ndarray, int8, shape (output_size,)
    cls : int
        The class the board computed (index of the first largest logit).
    cycles : int
        Engine cycles the accelerator counted for this image.
    """

    logits: np.ndarray
    cls: int
    cycles: int


def encode_result(logits, cycles=0):
    """The board's result frame for ``logits`` (what the gateware sends; for emulators)."""
    logits = np.asarray(logits, np.int8).reshape(-1)
    payload = (logits.view(np.uint8).tobytes() + bytes([int(np.argmax(logits))])
               + int(cycles).to_bytes(4, "little"))
    return encode_frame(MessageType.RESULT, payload)


def weights_hash(image):
    """The status's hash of a weight image (bytes): CRC-32 (ISO-HDLC)."""
    return zlib.crc32(bytes(image))


def weight_frames(image, chunk=WEIGHT_CHUNK):
    """The weights frames that upload ``image`` (bytes), first chunk flagged."""
    image = bytes(image)
    if not 1 <= chunk <= WEIGHT_CHUNK:
        raise ValueError(f"chunk of {chunk} bytes: give 1 to {WEIGHT_CHUNK}")
    return [encode_frame(MessageType.WEIGHTS, bytes([int(start == 0)]) + image[start:start + chunk])
            for start in range(0, len(image), chunk)]


def encode_status_request():
    """The host's status frame (empty)."""
    return encode_frame(MessageType.STATUS)


@dataclass(frozen=True)
class Status:
    """The board's status: ``weights`` and ``network`` hashes (uint32), ``ready`` (they match:
    images are taken), ``runtime_weights`` (the weights are loaded at run time)."""

    weights: int
    network: int
    ready: bool
    runtime_weights: bool


def encode_status(weights, network, runtime_weights):
    """The board's status frame (what the gateware sends; for emulators)."""
    flags = int(weights == network) | int(runtime_weights) << 1
    return encode_frame(MessageType.STATUS_REPLY, int(weights).to_bytes(4, "little")
                        + int(network).to_bytes(4, "little") + bytes([flags]))


def parse_status(type_, payload):
    """The :class:`Status` in a decoded answer.

    Raises
    ------
    LinkError
        On an error frame or a malformed answer.
    """
    _check_error(type_, payload)
    if type_ != MessageType.STATUS_REPLY or len(payload) != 9:
        raise LinkError(f"expected a status (0x83, 9 bytes), got type 0x{type_:02x} with "
                        f"{len(payload)} bytes")
    return Status(weights=int.from_bytes(payload[:4], "little"),
                  network=int.from_bytes(payload[4:8], "little"), ready=bool(payload[8] & 1),
                  runtime_weights=bool(payload[8] & 2))


def _check_error(type_, payload):
    """Raise :class:`LinkError` naming the :class:`ErrorCode` of an error frame."""
    if type_ == MessageType.ERROR:
        code = payload[0] if payload else 0
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"unknown error {code}"
        raise LinkError(f"the board rejected the frame: {name}")


def encode_error(code):
    """The board's error frame for ``code``."""
    return encode_frame(MessageType.ERROR, bytes([int(code)]))


class FrameDecoder:
    """Incremental frame decoder with resynchronization.

    Feed it bytes as they arrive; it returns the complete frames found. Bytes before a SYNC pair
    are skipped; a frame whose CRC does not match is dropped and counted in ``bad_frames``
    (decoding restarts right after its first sync byte, so a sync pair inside a corrupt frame is
    still found).

    Parameters
    ----------
    max_payload : int
        Longest payload accepted; a longer LEN is taken as corruption.
    """

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max_payload = max_payload
        self.buffer = bytearray()
        self.bad_frames = 0
        self.skipped = 0

    def feed(self, data):
        """Add bytes; return the list of ``(type, payload)`` completed by them."""
        self.buffer += bytes(data)
        frames = []
        while True:
            start = self.buffer.find(SYNC)
            if start < 0:
                keep = 1 if self.buffer[-1:] == SYNC[:1] else 0
                self.skipped += len(self.buffer) - keep
                del self.buffer[:len(self.buffer) - keep]
                return frames
            if start:
                self.skipped += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER_SIZE:
                return frames
            length = self.buffer[3] | self.buffer[4] << 8
            if length > self.max_payload:
                self.bad_frames += 1
                del self.buffer[:1]
                continue
            end = HEADER_SIZE + length + 1
            if len(self.buffer) < end:
                return frames
            body = bytes(self.buffer[2:end - 1])
            if crc8(body) != self.buffer[end - 1]:
                self.bad_frames += 1
                del self.buffer[:1]
                continue
            frames.append((body[0], body[3:]))
            del self.buffer[:end]


def decode_frame(data):
    """The one frame in ``data`` (bytes): ``(type, payload)``.

    Raises
    ------
    LinkError
        If ``data`` does not hold exactly one valid frame.
    """
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    if len(frames) != 1 or decoder.buffer or decoder.skipped or decoder.bad_frames:
        raise LinkError(f"expected one valid frame, got {len(frames)} (bad {decoder.bad_frames}, "
                        f"{decoder.skipped} stray bytes, {len(decoder.buffer)} left over)")
    return frames[0]


def parse_result(type_, payload, output_size):
    """The :class:`Result` in a decoded answer.

    Raises
    ------
    LinkError
        On an error frame (naming the :class:`ErrorCode`) or a malformed answer.
    """
    _check_error(type_, payload)
    if type_ != MessageType.RESULT:
        raise LinkError(f"unexpected answer type 0x{type_:02x}")
    if len(payload) != output_size + 5:
        raise LinkError(f"result of {len(payload)} bytes, expected {output_size + 5} "
                        f"({output_size} logits, class, cycles): is the board built for "
                        "another network?")
    logits = np.frombuffer(payload[:output_size], np.int8).copy()
    return Result(logits=logits, cls=payload[output_size],
                  cycles=int.from_bytes(payload[output_size + 1:], "little"))
