"""cocotb side of the board-core simulations: the host's end of the UART and a data-driven
bench (:func:`tb_board`) for a board core with a SPI flash model
(:class:`~cnnforge.sim.spi_flash.FlashBoard`).

Python wakes once per UART bit (ten times a byte), never per clock cycle. The frames are
:mod:`cnnforge.boards.protocol`'s, decoded with the host runtime's code. ``tests/boards/
test_top.py`` and ``benchmarks/icebreaker_kws.py`` run these benches.
"""

import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, Timer

from cnnforge.boards import protocol
from cnnforge.sim import runner as sr

__all__ = ["UARTHost", "start", "tb_board", "PS_PER_S"]

PS_PER_S = 10 ** 12


class UARTHost:
    """The host's end of the UART: bytes out on ``rx``, bytes in from ``tx``, one wake-up per
    bit. Bit times are the true baud rate's (in ps), not the board's divisor."""

    def __init__(self, dut, baud):
        self.dut = dut
        self.bit_ps = round(PS_PER_S / baud)
        self.received = bytearray()
        self._monitor = cocotb.start_soon(self._receive())

    async def send(self, data, gap_bits=0):
        rx = self.dut.rx
        for byte in bytes(data):
            rx.value = 0
            await Timer(self.bit_ps, unit="ps")
            for i in range(8):
                rx.value = (byte >> i) & 1
                await Timer(self.bit_ps, unit="ps")
            rx.value = 1
            await Timer(self.bit_ps * (1 + gap_bits), unit="ps")

    async def _receive(self):
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            await Timer(self.bit_ps // 2, unit="ps")
            if tx.value != 0:
                continue                                  # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(self.bit_ps, unit="ps")
                byte |= int(tx.value) << i
            await Timer(self.bit_ps, unit="ps")
            assert tx.value == 1, "stop bit low on the board's TX"
            self.received += bytes([byte])

    async def answer(self, timeout_ms=20.0):
        """The next complete frame from the board ``(type, payload)``; polls once per byte
        time."""
        decoder = protocol.FrameDecoder()
        deadline = get_sim_time("ns") + timeout_ms * 1e6
        while True:
            if self.received:
                data = bytes(self.received)
                self.received.clear()
                frames = decoder.feed(data)
                if frames:
                    assert len(frames) == 1 and not decoder.buffer, "more than one answer"
                    assert decoder.skipped == 0 and decoder.bad_frames == 0, \
                        "stray or corrupt bytes from the board"
                    return frames[0]
            if get_sim_time("ns") > deadline:
                raise AssertionError(f"no complete answer within {timeout_ms} ms (got "
                                     f"{len(decoder.buffer)} bytes)")
            await Timer(self.bit_ps * 10, unit="ps")


async def start(dut, clk_freq):
    """Start the clock at ``clk_freq`` (Hz), hold the UART line idle and reset for 3 cycles."""
    period = 2 * round(PS_PER_S / clk_freq / 2)        # whole ps, even (two half periods)
    Clock(dut.clk, period, unit="ps").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await Timer(period * 3, unit="ps")
    dut.rst.value = 0
    await Timer(period * 3, unit="ps")


@cocotb.test()
async def tb_board(dut):
    """A board core booting its SPRAM weights from the flash model (``corrupt`` as the stimulus
    says), then, with ``upload``, the weights over the UART in ``chunk``-byte frames, then the
    images. Results: the status after boot and after the upload, the error LED after boot, the
    logits, classes and engine cycles per image, simulated and wall seconds per phase."""
    stim = sr.load_stimulus()
    clk_freq = float(stim["clk_freq"])
    dut.corrupt.value = int(stim["corrupt"])
    await start(dut, clk_freq)
    host = UARTHost(dut, int(stim["baud"]))
    out = {"logits": [], "cls": [], "cycles": [], "phases": {}}

    async def ask(frame, timeout_ms=20.0):
        await host.send(frame)
        return await host.answer(timeout_ms)

    def status(answer):
        st = protocol.parse_status(*answer)
        return {"weights": st.weights, "network": st.network, "ready": st.ready}

    async def phase(name, work):
        t0, s0 = time.perf_counter(), get_sim_time("ns")
        await work()
        out["phases"][name] = {"wall_s": time.perf_counter() - t0,
                               "simulated_s": (get_sim_time("ns") - s0) / 1e9}

    async def boot():
        await Timer(round(int(stim["boot_cycles"]) * PS_PER_S / clk_freq), unit="ps")
        out["led_error_after_boot"] = int(dut.led_error.value)
        out["status_after_boot"] = status(await ask(protocol.encode_status_request()))

    async def upload():
        weights = bytes(np.asarray(stim["weights"], np.uint8))
        for frame in protocol.weight_frames(weights, chunk=int(stim["chunk"])):
            out["status_after_upload"] = status(await ask(frame))

    async def classify():
        for image in stim["images"]:
            result = protocol.parse_result(
                *await ask(protocol.encode_image(np.asarray(image, np.int8)), 1000.0),
                int(stim["output_size"]))
            out["logits"].append(result.logits.tolist())
            out["cls"].append(result.cls)
            out["cycles"].append(result.cycles)

    await phase("boot", boot)
    if int(stim["upload"]):
        await phase("upload", upload)
    await phase("classify", classify)
    sr.save_results(out)
