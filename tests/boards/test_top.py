"""The complete iCEBreaker top (UART host link + accelerator) in cocotb on Verilator.

The simulated design is ``icebreaker.SPEC.link_top(program)``: what the board file instantiates
behind its PLL and pins, at the board's core clock (``SPEC.core_mhz``, 30 MHz) and baud rate
(115200), i.e. 260 clock cycles per UART bit. The host side is a cocotb coroutine
(:class:`cnnforge.sim.board_bench.UARTHost`) that drives the RX line and samples the TX line once
per bit (Python wakes ~10 times per byte, never per clock cycle), speaking the frames of
:mod:`cnnforge.boards.protocol`; the answers are decoded with the same code as the host
runtime and checked against the golden model (:func:`cnnforge.sim.golden.run_quantized`).

This module holds both halves: the cocotb tests (``tb_*``, run inside the simulator, which
imports it as ``tests.boards.test_top``) and the pytest tests that build and run them.
"""

import dataclasses
import time

import cocotb
import numpy as np
import pytest
from cocotb.triggers import RisingEdge, Timer

from cnnforge.boards import protocol
from cnnforge.sim import runner as sr
from cnnforge.sim.board_bench import PS_PER_S, UARTHost, start
from cnnforge.sim.spi_flash import FlashBoard

TOPLEVEL = "top"


# ------------------------------------------------------------------------------------------------
# cocotb side


@cocotb.test()
async def tb_classify(dut):
    """Real digits as image frames: every answer is a result frame with the golden logits."""
    stim = sr.load_stimulus()
    await start(dut, float(stim["clk_freq"]))
    host = UARTHost(dut, int(stim["baud"]))
    out = {"logits": [], "cls": [], "cycles": []}
    t0 = time.perf_counter()
    for image in stim["images"]:
        await host.send(protocol.encode_image(np.asarray(image, np.int8)))
        type_, payload = await host.answer()
        result = protocol.parse_result(type_, payload, int(stim["output_size"]))
        out["logits"].append(result.logits.tolist())
        out["cls"].append(result.cls)
        out["cycles"].append(result.cycles)
    out["wall_s"] = time.perf_counter() - t0
    sr.save_results(out)


@cocotb.test()
async def tb_errors(dut):
    """Corrupt, malformed and cut-short frames are answered with error frames, and the next good
    frame is answered correctly each time."""
    stim = sr.load_stimulus()
    await start(dut, float(stim["clk_freq"]))
    host = UARTHost(dut, int(stim["baud"]))
    n_out = int(stim["output_size"])
    image = np.asarray(stim["images"][0], np.int8)
    good = protocol.encode_image(image)
    answers = []

    async def expect_error(frame, code, name):
        await host.send(frame)
        type_, payload = await host.answer(timeout_ms=40.0)
        assert type_ == protocol.MessageType.ERROR, f"{name}: answered 0x{type_:02x}"
        assert payload == bytes([code]), f"{name}: error {list(payload)}, expected {int(code)}"
        await host.send(good)
        type_, payload = await host.answer()
        answers.append(protocol.parse_result(type_, payload, n_out).logits.tolist())

    corrupt = bytearray(good)
    corrupt[5 + 17] ^= 0x10                              # one payload bit
    await expect_error(bytes(corrupt), protocol.ErrorCode.BAD_CRC, "flipped payload bit")
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    await expect_error(bytes(bad_crc), protocol.ErrorCode.BAD_CRC, "wrong CRC byte")
    await expect_error(protocol.encode_frame(0x42, b"\x00" * 4), protocol.ErrorCode.BAD_TYPE,
                       "unknown type")
    await expect_error(protocol.encode_frame(protocol.MessageType.IMAGE, good[5:-2]),
                       protocol.ErrorCode.BAD_LENGTH, "short image")
    # cut short: the board gives up after its timeout (20 ms of idle line)
    await expect_error(good[:30], protocol.ErrorCode.TIMEOUT, "truncated frame")
    # noise before a frame, including a lone sync byte: skipped while hunting, no answer
    await host.send(b"\x00\xff\xa5\x13" + good)
    type_, payload = await host.answer()
    answers.append(protocol.parse_result(type_, payload, n_out).logits.tolist())
    sr.save_results({"answers": answers})


@cocotb.test()
async def tb_reset_mid_inference(dut):
    """A good frame, then ``rst`` for a few cycles while the engine computes its answer (the
    answer's header is on the line, its logits not yet): the board then stays silent, and
    answers the next good frame."""
    stim = sr.load_stimulus()
    clk_freq = float(stim["clk_freq"])
    await start(dut, clk_freq)
    host = UARTHost(dut, int(stim["baud"]))
    first, second = (protocol.encode_image(np.asarray(image, np.int8))
                     for image in stim["images"])
    await host.send(first)
    period = 2 * round(PS_PER_S / clk_freq / 2)         # as start()'s clock
    await Timer(period * (int(stim["reset_after"]) - 1), unit="ps")
    await RisingEdge(dut.clk)
    busy, before = int(dut.led_busy.value), bytes(host.received)
    dut.rst.value = 1
    for _ in range(int(stim["hold"])):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    # a byte the reset cut short still completes in the host's receiver: wait it out
    await Timer(host.bit_ps * 12, unit="ps")
    cut = bytes(host.received)                            # all of the interrupted answer
    host.received.clear()
    await Timer(host.bit_ps * 30, unit="ps")
    after = bytes(host.received)                          # must stay empty: nothing pending
    await host.send(second)
    type_, payload = await host.answer()
    result = protocol.parse_result(type_, payload, int(stim["output_size"]))
    sr.save_results({"busy": busy, "before": list(before), "cut": list(cut),
                     "after": list(after), "logits": result.logits.tolist(), "cls": result.cls,
                     "cycles": result.cycles})


@cocotb.test()
async def tb_flash(dut):
    """A board with SPRAM weights booting from its SPI flash: a good image makes it ready and
    answer images; a corrupted one (``corrupt`` high across a reset) leaves it not ready (the
    error LED steady), refusing images (NO_WEIGHTS), until the host uploads the weights over the
    UART in chunks, each answered with a status; a chunk with a bad CRC (BAD_CRC) makes the
    host send the image again from the first chunk."""
    stim = sr.load_stimulus()
    clk_freq = float(stim["clk_freq"])
    dut.corrupt.value = 0
    await start(dut, clk_freq)
    host = UARTHost(dut, int(stim["baud"]))
    boot_ps = round(int(stim["boot_cycles"]) * PS_PER_S / clk_freq)
    images = [np.asarray(image, np.int8) for image in stim["images"]]
    n_out = int(stim["output_size"])
    out = {"statuses": [], "errors": [], "logits": [], "led_error": []}

    async def ask(frame):
        await host.send(frame)
        type_, payload = await host.answer()
        if type_ == protocol.MessageType.ERROR:
            out["errors"].append(int(payload[0]))
            return None
        return type_, payload

    async def status(frame=protocol.encode_status_request()):
        st = protocol.parse_status(*await ask(frame))
        out["statuses"].append([st.weights, st.network, st.ready])

    async def classify(image):
        answer = await ask(protocol.encode_image(image))
        if answer is not None:
            out["logits"].append(protocol.parse_result(*answer, n_out).logits.tolist())

    await Timer(boot_ps, unit="ps")
    out["led_error"].append(int(dut.led_error.value))
    await status()
    await classify(images[0])
    dut.corrupt.value = 1
    dut.rst.value = 1
    await Timer(boot_ps // 100, unit="ps")
    dut.rst.value = 0
    await Timer(boot_ps, unit="ps")
    out["led_error"].append(int(dut.led_error.value))
    await status()
    await classify(images[1])                                    # NO_WEIGHTS
    weights = bytes(np.asarray(stim["weights"], np.uint8))
    frames = protocol.weight_frames(weights, chunk=int(stim["chunk"]))
    bad = bytearray(frames[1])
    bad[8] ^= 0x10                     # a weight byte on the line: the frame's CRC-8 fails
    for frame in [frames[0], bytes(bad), *frames[2:]]:           # BAD_CRC, then not ready
        answer = await ask(frame)
        if answer is not None:
            st = protocol.parse_status(*answer)
            out["statuses"].append([st.weights, st.network, st.ready])
    for frame in frames:
        await status(frame)
    out["led_error"].append(int(dut.led_error.value))
    await classify(images[1])
    sr.save_results(out)


# ------------------------------------------------------------------------------------------------
# pytest side


@pytest.fixture(scope="module")
def top_build():
    from cnnforge.boards.icebreaker import SPEC
    from cnnforge.hw.compiler.program import compile_network
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.hw.frontend.quantize import quantize

    from tests.boards import digits_net
    network = load_network(digits_net())
    qnet = quantize(network)
    program = compile_network(qnet, SPEC.config(qnet))
    top = SPEC.link_top(program)
    build_dir = sr.build_root() / "sim" / "icebreaker_top"
    src = sr.write_verilog(top, build_dir / f"{TOPLEVEL}.v", name=TOPLEVEL)
    runner = sr.build([src], TOPLEVEL, build_dir / "sim_build")
    return network, qnet, program, top, runner, build_dir


def _stimulus(top, program, images):
    return {"images": images, "clk_freq": top.clk_freq, "baud": top.baud,
            "output_size": program.output_size}


def test_top_divisor_is_the_boards():
    """The simulated top runs at the clock the iCEBreaker's PLL makes and at its baud rate."""
    from cnnforge.boards.icebreaker import ICEBreakerTop, SPEC
    from cnnforge.boards.uart import uart_divisor
    pll = ICEBreakerTop(None, SPEC).pll
    assert pll.f_out == SPEC.core_mhz * 1e6 == 30e6
    assert SPEC.baud == 115200
    assert uart_divisor(pll.f_out, SPEC.baud) == 260


@pytest.mark.slow
def test_classifies_digits_over_uart(top_build):
    from cnnforge.sim.golden import run_quantized
    network, qnet, program, top, runner, build_dir = top_build
    x, y = network.test_data()
    images = qnet.quantize_input(x[:5])
    golden = run_quantized(qnet, images)[-1].reshape(len(images), -1)
    ex = sr.Exchange.create(build_dir, "classify", _stimulus(top, program, images))
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_classify", extra_env=ex.env())
    got = ex.read_results()
    logits = np.array(got["logits"], np.int64)
    assert np.array_equal(logits, golden), "board logits differ from the golden model"
    assert got["cls"] == [int(v) for v in golden.argmax(axis=1)]
    assert all(c > 0 for c in got["cycles"])
    assert np.mean(np.array(got["cls"]) == y[:5]) >= 0.8


@pytest.mark.slow
def test_rejects_bad_frames_and_resynchronizes(top_build):
    from cnnforge.sim.golden import run_quantized
    network, qnet, program, top, runner, build_dir = top_build
    x, _ = network.test_data()
    images = qnet.quantize_input(x[8:9])
    golden = run_quantized(qnet, images)[-1].reshape(-1)
    ex = sr.Exchange.create(build_dir, "errors", _stimulus(top, program, images))
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_errors", extra_env=ex.env())
    answers = ex.read_results()["answers"]
    assert len(answers) == 6
    for answer in answers:
        assert answer == golden.tolist()


@pytest.mark.slow
def test_reset_mid_inference(top_build):
    """``rst`` for 2 cycles half-way through the engine's cycles for a good frame (on the
    performance model's clock, from the end of the frame): no complete answer came, the board
    is silent after the reset, and the next good frame is answered with the golden logits and
    the cycle count of an undisturbed image (the model's, which the engine's counter equals)."""
    from cnnforge.hw.models.perf import network_model
    from cnnforge.sim.golden import run_quantized
    network, qnet, program, top, runner, build_dir = top_build
    x, _ = network.test_data()
    images = qnet.quantize_input(x[10:12])
    golden = run_quantized(qnet, images)[-1].reshape(len(images), -1)
    _, per_image = network_model(program)
    ex = sr.Exchange.create(build_dir, "reset", {**_stimulus(top, program, images),
                                                 "reset_after": per_image // 2, "hold": 2})
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_reset_mid_inference", extra_env=ex.env())
    got = ex.read_results()
    interrupted = protocol.encode_result(golden[0], per_image)
    assert got["busy"] == 1, "the board was idle when reset: no inference to interrupt"
    assert bytes(got["before"]) == interrupted[:len(got["before"])]
    assert got["cut"][:len(got["before"])] == got["before"]
    assert len(got["cut"]) <= protocol.HEADER_SIZE, \
        f"the interrupted answer went further than its header: {got['cut']}"
    assert got["after"] == [], f"bytes from the board after the reset: {got['after']}"
    assert got["logits"] == golden[1].tolist(), "logits differ from the golden model"
    assert got["cls"] == int(golden[1].argmax())
    assert got["cycles"] == per_image


@pytest.mark.slow
def test_boots_weights_from_flash():
    """The iCEBreaker core of a network with SPRAM feature maps and weights, its flash holding
    the weight image at the board's offset (what ``cnnforge flash`` writes): after reset the
    weights are read and checked, images answered with the golden logits; a corrupted flash
    image is not used (status not ready, NO_WEIGHTS, the error LED lit) until the host uploads
    the weights over the UART (after a chunk with a bad CRC, again from the first chunk), as
    :func:`tb_flash` says."""
    from cnnforge.boards.icebreaker import SPEC
    from cnnforge.hw.compiler.program import compile_network, weight_image
    from cnnforge.hw.frontend.quantize import quantize
    from cnnforge.sim.golden import run_quantized
    from tests.helpers import conv_net, random_images
    qnet = quantize(conv_net(seed=7, stride=2))
    config = dataclasses.replace(SPEC.config(qnet), spram_feature_maps=True, spram_weights=True)
    program = compile_network(qnet, config)
    weights = weight_image(program)
    core = SPEC.link_top(program)
    top = FlashBoard(core, weights, SPEC.weights_offset)
    build_dir = sr.build_root() / "sim" / "icebreaker_flash_top"
    src = sr.write_verilog(top, build_dir / f"{TOPLEVEL}.v", name=TOPLEVEL)
    runner = sr.build([src], TOPLEVEL, build_dir / "sim_build")
    images = random_images(qnet, 2, 8)
    boot = 16 * len(weights) + 200 + core.clk_freq * 3e-6
    ex = sr.Exchange.create(build_dir, "flash", {**_stimulus(core, program, images),
                                                 "weights": np.frombuffer(weights, np.uint8),
                                                 "boot_cycles": int(boot), "chunk": 40})
    sr.run(runner, TOPLEVEL, __name__, testcase="tb_flash", extra_env=ex.env())
    got = ex.read_results()
    network = protocol.weights_hash(weights)
    golden = run_quantized(qnet, images)[-1].reshape(len(images), -1)
    chunks = -(-len(weights) // 40)
    assert chunks >= 3
    assert got["logits"] == [golden[0].tolist(), golden[1].tolist()]
    no_weights, bad_crc = int(protocol.ErrorCode.NO_WEIGHTS), int(protocol.ErrorCode.BAD_CRC)
    assert got["errors"] == [no_weights, bad_crc]
    statuses = got["statuses"]
    assert len(statuses) == 2 + (chunks - 1) + chunks
    assert statuses[0] == [network, network, True]
    corrupted = protocol.weights_hash(bytes(b ^ 1 for b in weights))
    assert statuses[1] == [corrupted, network, False]
    assert not any(s[2] for s in statuses[2:1 + chunks])       # after the bad chunk
    assert all(s[1] == network for s in statuses)
    assert [s[2] for s in statuses[-chunks:]] == [False] * (chunks - 1) + [True]
    assert statuses[-1][0] == network
    assert got["led_error"] == [0, 1, 0]
