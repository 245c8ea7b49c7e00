"""The SPRAM memories (``hw/rtl/spram.py``) in Amaranth's simulator, and the accelerator with its
feature maps and weights in SPRAM against the golden model.

* ``SPRAM``: a random sequence of byte-enabled writes and reads against a dictionary (a read's
  word one cycle after its address), through the tiling of block models; with ``primitive``
  the same tiling around ``SB_SPRAM256KA`` instances.
* ``FeatureMapSlots``: writes and two reads a cycle in different slots, each read's byte one
  cycle later; the write wins its slot.
* ``WeightLoader``: bytes with gaps assembled into little-endian words at consecutive
  addresses, only while enabled, ``loaded`` after the last word and cleared by the next image.
* The accelerator with ``spram_feature_maps`` and ``spram_weights`` (weights streamed in first):
  every layer bit-exact and the cycle counts the same as with block RAM; a fused pooling is
  refused by the compiler with SPRAM feature maps.
"""

import numpy as np
import pytest
from amaranth.back import rtlil
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import (AcceleratorConfig, ConfigError, compile_network,
                                          weight_image)
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.rtl.spram import SPRAM, FeatureMapSlots, WeightLoader
from cnnforge.sim.rtl import rtl_accelerator
from tests.helpers import check_result, conv_net, inverted_residual, random_images, simulate


@settings(max_examples=6, deadline=None)
@given(width=st.sampled_from([8, 16, 24]), depth=st.sampled_from([37, 16_400]),
       seed=st.integers(0, 2**32 - 1))
def test_spram_model(width, depth, seed):
    """Random byte-enabled writes and reads against a dictionary, through the block models
    (two banks of blocks for 16,400 words; 24 bits: two blocks side by side, the second's high
    byte unused)."""
    rng = np.random.default_rng(seed)
    dut = SPRAM(depth, width)
    mem = {}

    async def bench(ctx):
        for _ in range(300):
            # a few addresses, so reads find writes; across the bank boundary when deep
            addr = min(depth - 1, int(rng.integers(20)) + (16_374 if depth > 100 and
                                                          rng.random() < 0.5 else 0))
            if rng.random() < 0.5:
                en = int(rng.integers(1, 1 << dut.nbytes))
                value = int(rng.integers(1 << width))
                ctx.set(dut.wr_en, en)
                ctx.set(dut.wr_data, value)
                old = mem.get(addr, 0)
                for b in range(dut.nbytes):
                    if en >> b & 1:
                        old = (old & ~(0xFF << 8 * b)) | (value & (0xFF << 8 * b))
                mem[addr] = old
                read = None
            else:
                ctx.set(dut.wr_en, 0)
                read = mem.get(addr, 0)
            ctx.set(dut.addr, addr)
            await ctx.tick()                  # the edge that registers the read
            if read is not None:
                assert ctx.get(dut.rd_data) == read

    simulate(dut, bench)


def test_spram_primitives():
    """For synthesis: ⌈width/16⌉ × ⌈depth/16384⌉ ``SB_SPRAM256KA`` instances, every pin
    connected (awake, powered), and no model left."""
    for depth, width, blocks in ((100, 16, 1), (15_008, 16, 1), (20_000, 24, 4)):
        dut = SPRAM(depth, width, primitive=True)
        text = rtlil.convert(dut)
        assert text.count("cell \\SB_SPRAM256KA ") == blocks == dut.blocks
        for pin in ("ADDRESS", "DATAIN", "MASKWREN", "WREN", "CHIPSELECT", "CLOCK", "STANDBY",
                    "SLEEP", "POWEROFF", "DATAOUT"):
            assert text.count(f"connect \\{pin} ") == blocks, pin
        assert "$mem" not in text


def test_feature_map_slots():
    """Three slots of 8 values: each cycle a write to one slot and reads A, B from the others,
    random; every read returns the value last written (the write wins its slot)."""
    rng = np.random.default_rng(3)
    dut = FeatureMapSlots(3, 8, 5)
    mem = np.zeros(24, np.int64)

    async def bench(ctx):
        for _ in range(400):
            slots = rng.permutation(3)
            w, a, b = (int(s * 8 + rng.integers(8)) for s in slots)
            write = rng.random() < 0.7
            value = int(rng.integers(-128, 128))
            ctx.set(dut.wr_en, int(write))
            ctx.set(dut.wr_addr, w)
            ctx.set(dut.wr_data, value)
            ctx.set(dut.rd_a_addr, a)
            ctx.set(dut.rd_b_addr, b)
            await ctx.tick()
            assert (ctx.get(dut.rd_a_data), ctx.get(dut.rd_b_data)) == (mem[a], mem[b])
            if write:
                mem[w] = value

    simulate(dut, bench)


@pytest.mark.parametrize("lanes, lane_bytes", [(2, 1), (3, 2)])
def test_weight_loader(lanes, lane_bytes):
    words = 5
    rng = np.random.default_rng(lanes)
    dut = WeightLoader(words, lanes, lane_bytes)
    nbytes = words * lanes * lane_bytes
    written = {}

    async def bench(ctx):
        for image in range(2):
            data = rng.integers(256, size=nbytes)
            sent = 0
            while sent < nbytes:
                enable = rng.random() < 0.8
                valid = rng.random() < 0.7
                ctx.set(dut.enable, int(enable))
                ctx.set(dut.i_weights.valid, int(valid))
                ctx.set(dut.i_weights.payload, int(data[sent]))
                if ctx.get(dut.wr_en):
                    written[ctx.get(dut.wr_addr)] = ctx.get(dut.wr_data)
                assert ctx.get(dut.i_weights.ready) == enable
                await ctx.tick()
                sent += valid and enable
                if sent == 1:
                    assert not ctx.get(dut.loaded)
            ctx.set(dut.i_weights.valid, 0)
            assert ctx.get(dut.loaded) and ctx.get(dut.wr_en)     # the last word's write
            written[ctx.get(dut.wr_addr)] = ctx.get(dut.wr_data)
            expect = {w: int.from_bytes(bytes(int(v) for v in
                                              data[w * lanes * lane_bytes:(w + 1) * lanes
                                                   * lane_bytes]), "little")
                      for w in range(words)}
            assert written == expect

    simulate(dut, bench)


@pytest.mark.parametrize("net, array, dataflow", [
    (conv_net(seed=3, stride=2, padding=0), (2, 3), "or"),
    (inverted_residual(c=3, expand=2, input_shape=(2, 5, 6)), (2, 2), "wr"),
])
def test_accelerator_in_spram(net, array, dataflow):
    """Feature maps and weights in SPRAM (the weight image streamed in first, with gaps; the
    inverted residual's Winograd layer makes its weights 12-bit, two bytes each): every layer
    equals the golden model and takes the cycles it takes with block RAM."""
    qnet = quantize(net)
    spram = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow,
                                                    spram_feature_maps=True, spram_weights=True))
    bram = compile_network(qnet, AcceleratorConfig(*array, dataflow=dataflow))
    assert spram.fm_depth == spram.fm_slots * 1 << (spram.fm_depth // spram.fm_slots - 1
                                                    ).bit_length()
    assert len(weight_image(spram)) == spram.weights.size * (1 if spram.w_width == 8 else 2)
    images = random_images(qnet, 2, 4)
    logits, layers, cycles = rtl_accelerator(spram, images, gaps=0.2, backpressure=0.2)
    check_result(spram, images, logits, layers, cycles)
    _, bram_layers, _ = rtl_accelerator(bram, images[:1])
    assert ([c["cycles"] for c, _ in layers[0]] == [c["cycles"] for c, _ in bram_layers[0]])


def test_pooling_refused_with_spram_maps():
    qnet = quantize(conv_net(pool=True))
    with pytest.raises(ConfigError, match=r"^layer \S+: a fused pooling reads and writes its "
                       "output slot in one cycle"):
        compile_network(qnet, AcceleratorConfig(2, 2, spram_feature_maps=True))
    compile_network(qnet, AcceleratorConfig(2, 2, spram_weights=True))
