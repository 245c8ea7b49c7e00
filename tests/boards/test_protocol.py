"""Host side of the UART protocol (``cnnforge.boards.protocol``) and the host runtime
(``cnnforge.boards.runtime``, ``cnnforge infer``) against an emulated board.

The emulator (:class:`EmulatedBoard`) answers frames the way the gateware does, computing the
logits with the golden model; ``cnnforge infer`` is run against it through a real pseudo-terminal,
so pyserial's path is exercised too.
"""

import os
import pty
import subprocess
import threading

import numpy as np
import pytest

from cnnforge.boards import protocol
from cnnforge.boards.protocol import ErrorCode, FrameDecoder, LinkError, MessageType
from cnnforge.boards.runtime import BoardLink

from . import CNNFORGE, digits_net


def test_crc8_check_value():
    """CRC-8/SMBUS catalogue check value."""
    assert protocol.crc8(b"123456789") == 0xF4
    assert protocol.crc8(b"") == 0


def test_frame_layout():
    frame = protocol.encode_frame(MessageType.IMAGE, b"\x01\x02\x03")
    assert frame[:2] == b"\xa5\x5a"
    assert frame[2] == 0x01 and frame[3:5] == b"\x03\x00"
    assert frame[5:8] == b"\x01\x02\x03"
    assert frame[8] == protocol.crc8(frame[2:8])
    assert protocol.decode_frame(frame) == (1, b"\x01\x02\x03")


def test_image_frame_is_int8_only():
    image = np.arange(-3, 3, dtype=np.int8).reshape(1, 2, 3)
    frame = protocol.encode_image(image)
    assert frame[5:11] == bytes([253, 254, 255, 0, 1, 2])
    with pytest.raises(TypeError, match="int8"):
        protocol.encode_image(image.astype(np.float32))


def test_decoder_resynchronizes():
    good = protocol.encode_result(np.arange(10) - 5, cycles=1234)
    corrupt = bytearray(good)
    corrupt[7] ^= 1
    dec = FrameDecoder()
    # noise, a corrupt frame, a lone sync byte, then a good frame split in pieces
    stream = b"\x00\x13\xa5" + bytes(corrupt) + b"\xa5" + good
    frames = []
    for i in range(0, len(stream), 3):
        frames += dec.feed(stream[i:i + 3])
    assert len(frames) == 1
    assert dec.bad_frames >= 1
    result = protocol.parse_result(*frames[0], 10)
    assert result.logits.tolist() == list(range(-5, 5))
    assert result.cls == 9 and result.cycles == 1234


def test_result_class_is_first_max():
    result = protocol.parse_result(*protocol.decode_frame(
        protocol.encode_result([1, 7, 3, 7, -128, 0, 0, 0, 0, 0])), 10)
    assert result.cls == 1


def test_error_frames_raise():
    with pytest.raises(LinkError, match="BAD_CRC"):
        protocol.parse_result(*protocol.decode_frame(protocol.encode_error(ErrorCode.BAD_CRC)),
                              10)
    with pytest.raises(LinkError, match="another network"):
        protocol.parse_result(MessageType.RESULT, b"\x00" * 7, 10)


class EmulatedBoard:
    """A board in software: parses frames like the gateware, answers with golden logits."""

    def __init__(self, qnet, input_shape, weights=b"", runtime=False):
        from cnnforge.sim.golden import run_quantized
        self.qnet, self.input_shape = qnet, tuple(input_shape)
        self.image_size = int(np.prod(input_shape))
        self.run = run_quantized
        self.decoder = FrameDecoder()
        self.corrupt_next = 0
        self.network = protocol.weights_hash(weights)
        self.runtime = runtime
        self.loaded = b"" if runtime else bytes(weights)

    def status(self):
        return protocol.encode_status(protocol.weights_hash(self.loaded), self.network,
                                      self.runtime)

    def answer(self, data):
        out = b""
        for type_, payload in self.decoder.feed(data):
            if type_ == MessageType.STATUS:
                out += self.status()
            elif type_ == MessageType.WEIGHTS and self.runtime:
                if self.corrupt_next:
                    self.corrupt_next -= 1
                    self.loaded += b"?"               # a byte the gateware took, CRC bad
                    out += protocol.encode_error(ErrorCode.BAD_CRC)
                    continue
                self.loaded = (b"" if payload[0] & 1 else self.loaded) + payload[1:]
                out += self.status()
            elif type_ != MessageType.IMAGE:
                out += protocol.encode_error(ErrorCode.BAD_TYPE)
            elif protocol.weights_hash(self.loaded) != self.network:
                out += protocol.encode_error(ErrorCode.NO_WEIGHTS)
            elif len(payload) != self.image_size:
                out += protocol.encode_error(ErrorCode.BAD_LENGTH)
            elif self.corrupt_next:
                self.corrupt_next -= 1
                out += protocol.encode_error(ErrorCode.BAD_CRC)
            else:
                image = np.frombuffer(payload, np.int8).reshape(1, *self.input_shape)
                logits = self.run(self.qnet, image)[-1].reshape(-1)
                out += protocol.encode_result(logits, cycles=2000)
        return out


class LoopSerial:
    """A serial-port double wired to an :class:`EmulatedBoard`."""

    def __init__(self, board):
        self.board = board
        self.pending = b""

    def write(self, data):
        self.pending += self.board.answer(data)

    def read(self, n):
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def reset_input_buffer(self):
        self.pending = b""


@pytest.fixture(scope="module")
def digits():
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize
    network = load_network(digits_net())
    return network, quantize(network)


def test_runtime_infers_and_retries(digits):
    from cnnforge.sim.golden import run_quantized
    network, qnet = digits
    x, _ = network.test_data()
    images = qnet.quantize_input(x[:3])
    board = EmulatedBoard(qnet, network.input_shape)
    board.corrupt_next = 1                      # the first try is rejected, the retry answered
    link = BoardLink(LoopSerial(board), 10, timeout=0.5, retries=1)
    golden = run_quantized(qnet, images)[-1].reshape(3, -1)
    for image, expected in zip(images, golden):
        result = link.infer(image)
        assert result.logits.tolist() == expected.tolist()
        assert result.cls == int(np.argmax(expected))
    board.corrupt_next = 5
    with pytest.raises(LinkError, match="BAD_CRC"):
        link.infer(images[0])


def test_runtime_uploads_weights(digits):
    """A board with SPRAM weights: images are refused until the weights are uploaded; a failed
    chunk makes the host send the image again from the first chunk; a board built for other
    weights is named in one line."""
    network, qnet = digits
    image = bytes(range(256)) * 9 + b"tail"
    board = EmulatedBoard(qnet, network.input_shape, image, runtime=True)
    link = BoardLink(LoopSerial(board), 10, timeout=0.5, retries=0)
    x, _ = network.test_data()
    with pytest.raises(LinkError, match="NO_WEIGHTS"):
        link.infer(qnet.quantize_input(x[:1])[0])
    assert not link.status().ready
    board.corrupt_next = 1
    seen = []
    assert link.ensure_weights(image, progress=lambda sent, total: seen.append(sent))
    assert board.loaded == image and link.status().ready
    assert seen == [1024, 2048, len(image)]      # the first chunk failed, then all three
    assert not link.ensure_weights(image)                      # already there
    link.infer(qnet.quantize_input(x[:1])[0])
    with pytest.raises(LinkError, match="built for another network"):
        link.ensure_weights(image + b"x")
    rom = EmulatedBoard(qnet, network.input_shape, image)
    assert not BoardLink(LoopSerial(rom), 10, timeout=0.5).ensure_weights(image)
    with pytest.raises(LinkError, match="^weight upload failed 3 times"):
        board.loaded, board.corrupt_next = b"", 3
        link.ensure_weights(image)


def test_cnnforge_infer_over_a_pty(digits, tmp_path):
    """``cnnforge infer --port`` through pyserial on a pseudo-terminal served by the emulator."""
    from cnnforge.sim.golden import run_quantized
    network, qnet = digits
    x, _ = network.test_data()
    np.save(tmp_path / "image.npy", x[0])
    from cnnforge.boards.icebreaker import SPEC
    from cnnforge.hw.compiler.program import compile_network, weight_image
    rom = weight_image(compile_network(qnet, SPEC.config(qnet)))   # the weights the board holds
    board = EmulatedBoard(qnet, network.input_shape, rom)
    master, slave = pty.openpty()
    import tty
    tty.setraw(slave)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            answer = board.answer(data)
            if answer:
                os.write(master, answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        proc = subprocess.run([CNNFORGE, "infer",
                               "--port", os.ttyname(slave), str(tmp_path / "image.npy")],
                              capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    logits = run_quantized(qnet, qnet.quantize_input(x[:1]))[-1].reshape(-1)
    assert f"class {int(np.argmax(logits))} " in proc.stdout
    assert "logits [" + " ".join(str(int(v)) for v in logits) + "]" in proc.stdout


def test_cnnforge_infer_without_board_is_one_line(tmp_path):
    np.save(tmp_path / "image.npy", np.zeros((1, 8, 8), np.float32))
    proc = subprocess.run([CNNFORGE, "infer", "--port",
                           str(tmp_path / "no-such-tty"), str(tmp_path / "image.npy")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("cnnforge: error: cannot open")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
