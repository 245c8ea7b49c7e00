"""Compiler (``cnnforge.hw.compiler.program``): configuration and network errors with messages that say
what is wrong and where, the values it derives, and the tiles it plans or is told to use."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnforge.hw.compiler.program import (AcceleratorConfig, ConfigError, compile_network,
                                          reduction_width)
from cnnforge.hw.frontend.network import (
    AdaptiveAvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, NetworkError, ReLU, Sequential,
)
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import quantize
from tests.helpers import inverted_residual

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "net.py"


def ceil_div(a, b):
    return -(-a // b)


def quantized(*layers, input_shape, seed=0):
    """Quantize a network with random weights (calibrated on random inputs)."""
    net = Sequential(*layers, input_shape=input_shape)
    rng = np.random.default_rng(seed)
    state = {key: (rng.standard_normal(shape) / math.sqrt(max(1, np.prod(shape[1:]))))
             .astype(np.float32) for key, shape in net.state_dict_shapes().items()}
    net.load_state_dict(state)
    return quantize(net, rng.standard_normal((4, *input_shape)).astype(np.float32))


@pytest.fixture(scope="module")
def digits():
    return quantize(load_network(DIGITS))


# ------------------------------------------------------------------------------------------------
# Configuration errors


@pytest.mark.parametrize("rows, cols", [(0, 4), (65, 1), (4, 0), (1, 65), (-1, 2)])
def test_array_size_out_of_range(rows, cols):
    with pytest.raises(ConfigError, match=rf"^array {rows}x{cols}: rows and cols must be in "
                                          r"1\.\.64$"):
        AcceleratorConfig(rows=rows, cols=cols)


@pytest.mark.parametrize("rows, cols", [(1, 1), (64, 64), (1, 64), (3, 2)])
def test_array_size_limits_accepted(rows, cols):
    cfg = AcceleratorConfig(rows=rows, cols=cols, input_buffer_bytes=max(64, cols))
    assert (cfg.rows, cfg.cols, cfg.pes) == (rows, cols, rows * cols)
    assert cfg.min_pass_beats == rows * cols + 1


def test_ppu_interval(digits):
    """``ppu_interval`` 1 or 2; with 2 passes are at least 2·R·C + 1 beats and every layer runs
    output reuse, direct (the other drains and the element-wise add feed the post-processor
    every cycle): ``auto`` picks OR, an explicit IR, WR, Winograd or an add is refused by
    name."""
    with pytest.raises(ConfigError, match=r"^ppu_interval=3: the post-processor takes a beat "
                                          r"every 1 or 2 cycles$"):
        AcceleratorConfig(ppu_interval=3)
    assert AcceleratorConfig(4, 3, ppu_interval=2).min_pass_beats == 25
    program = compile_network(digits, AcceleratorConfig(4, 4, dataflow="auto", ppu_interval=2))
    assert {layer.dataflow for layer in program.layers} == {"or"}
    for config, error in [(dict(dataflow="wr"), "runs wr"),
                          (dict(algorithm="winograd"), "runs winograd")]:
        with pytest.raises(ConfigError, match=rf"^layer \S+ \(\S+\): {error}, whose drain feeds "
                                              r"the post-processor every cycle; ppu_interval=2 "
                                              r"needs output reuse \(dataflow 'or', direct\)$"):
            compile_network(digits, AcceleratorConfig(4, 4, ppu_interval=2, **config))
    with pytest.raises(ConfigError, match=r"^layer \S+ \(Add\): an element-wise add feeds the "
                                          r"post-processor every cycle"):
        compile_network(quantize(inverted_residual()), AcceleratorConfig(2, 2, ppu_interval=2))


def test_unknown_dataflow():
    with pytest.raises(ConfigError, match=r"^dataflow 'ws': choose one of 'or', 'ir', 'wr', "
                                          r"'auto'$"):
        AcceleratorConfig(dataflow="ws")


@pytest.mark.parametrize("dataflow", ["or", "ir", "wr", "auto"])
def test_known_dataflows(digits, dataflow):
    """All three dataflows exist (WR was "not yet" when this test was first planned)."""
    program = compile_network(digits, AcceleratorConfig(4, 4, dataflow=dataflow,
                                                        algorithm="direct"))
    for layer in program.layers:
        assert layer.dataflow in (("or", "ir", "wr") if dataflow == "auto" else (dataflow,))


def test_unknown_algorithm(digits):
    with pytest.raises(ConfigError, match=r"^algorithm 'fft': choose one of 'auto', 'direct', "
                                          r"'winograd'$"):
        AcceleratorConfig(algorithm="fft")


def test_unknown_layer_dataflow(digits):
    with pytest.raises(ConfigError, match=r"^layer 7 \(Linear\): dataflow 'xx': choose one of"):
        compile_network(digits, dataflows={"7": "xx"})


def test_buffer_smaller_than_a_word_per_bank():
    with pytest.raises(ConfigError, match=r"^input_buffer_bytes=3 is smaller than one word per "
                                          r"bank \(4 banks\)$"):
        AcceleratorConfig(cols=4, input_buffer_bytes=3)


@pytest.mark.parametrize("budget, layer, kind, need, channels", [
    # first conv: N = 1, smallest tile = one 2×2 pooling window -> a 4×4 input tile (3×3 kernel,
    # stride 1): 4 rows of one 4-bank word, 4 words × 4 banks = 16 bytes
    (8, "0+1+2", "Conv2d+ReLU+MaxPool2d", 16, 1),
    # second conv: N = 8 channels of the same 4×4 input tile: 8 × 16 = 128 bytes
    (100, "3+4+5", "Conv2d+ReLU+MaxPool2d", 128, 8),
])
def test_input_buffer_too_small(digits, budget, layer, kind, need, channels):
    """The message names the layer, what its smallest tile needs and the budget."""
    with pytest.raises(ConfigError) as info:
        compile_network(digits, AcceleratorConfig(4, 4, input_buffer_bytes=budget))
    assert str(info.value) == (
        f"layer {layer} ({kind}): even the smallest tile needs {need} bytes of input tile buffer "
        f"({channels} channels), more than input_buffer_bytes={budget}")
    # the largest need of all layers is enough: the Linear layer (64 channels of one pixel in
    # one 4-bank word each: 256 bytes)
    with pytest.raises(ConfigError, match=r"^layer 7 \(Linear\): even the smallest tile needs "
                                          r"256 bytes"):
        compile_network(digits, AcceleratorConfig(4, 4, input_buffer_bytes=255))
    compile_network(digits, AcceleratorConfig(4, 4, input_buffer_bytes=256))


@pytest.mark.parametrize("array", [(4, 4), (8, 8)])
def test_ds_cnn_fits_the_default_buffer(array):
    """The DS-CNN keyword-spotting net (Zhang et al., "Hello Edge", 2017: a 10×4 stride-2 stem,
    four depthwise-separable blocks of 64 channels, a global average pool over 25×5) compiles
    at the default 4 KiB input tile buffer: a depthwise or pooling tile holds the R channels of
    one block, and the global pool's single output column keeps the tile dense (in the
    depthwise row mapping one channel of 25·5 words per bank, where the whole map at the pool's
    stride 5 took 32,000 bytes)."""
    rows, cols = array
    blocks = []
    for _ in range(4):
        blocks += [Conv2d(64, 64, 3, padding=1, groups=64), ReLU(), Conv2d(64, 64, 1), ReLU()]
    qnet = quantized(Conv2d(1, 64, (10, 4), stride=2, padding=(4, 1, 5, 1)), ReLU(), *blocks,
                     AdaptiveAvgPool2d(1), Flatten(), Linear(64, 12), input_shape=(1, 49, 10))
    program = compile_network(qnet, AcceleratorConfig(rows, cols))
    pool = program.layers[-2].values
    assert (pool["kh"], pool["kw"], pool["sh"], pool["sw"]) == (25, 5, 1, 1)
    assert pool["ld_blocks"] == 64 // rows and pool["ld_chans"] == rows
    # the row mapping: one channel per bank (25·5 words); the lane mapping: R channels x-banked
    assert pool["dw_rows"] == 1
    assert pool["slot_words"] == 25 * 5
    for layer in program.layers:
        if layer.values.get("dw"):
            assert layer.values["ld_chans"] == rows and layer.values["dw_rows"] == 1
    assert program.slot_words * program.input_banks <= 4096


def test_tile_override_too_big(digits):
    with pytest.raises(ConfigError, match=r"^layer 3\+4\+5 \(Conv2d\+ReLU\+MaxPool2d\): tile "
                                          r"\(4, 4\) needs 384 bytes of input tile buffer, more "
                                          r"than input_buffer_bytes=64$"):
        compile_network(digits, AcceleratorConfig(input_buffer_bytes=64),
                        tiles={"3+4+5": (4, 4)})


def test_override_of_unknown_layer(digits):
    with pytest.raises(ConfigError, match=r"^no engine layer named '3' \(layers: 0\+1\+2, "
                                          r"3\+4\+5, 7\)$"):
        compile_network(digits, tiles={"3": (2, 2)})


# ------------------------------------------------------------------------------------------------
# Network errors


@pytest.mark.parametrize("pool, what", [
    (MaxPool2d(3), r"kernel \(3, 3\) stride \(3, 3\)"),
    (MaxPool2d(2, stride=1), r"kernel \(2, 2\) stride \(1, 1\)"),
    (MaxPool2d((2, 1)), r"kernel \(2, 1\) stride \(2, 1\)"),
    (MaxPool2d(4, stride=2), r"kernel \(4, 4\) stride \(2, 2\)"),
])
def test_maxpool_window_refused(pool, what):
    features = Sequential(Conv2d(1, 2, 3, padding=1), pool, Flatten(),
                          input_shape=(1, 8, 8)).output_shape[0]
    qnet = quantized(Conv2d(1, 2, 3, padding=1), ReLU(), pool, Flatten(), Linear(features, 3),
                     input_shape=(1, 8, 8))
    with pytest.raises(NetworkError, match=r"^layer 2 \(MaxPool2d\): the accelerator needs a "
                                           r"square window of a power-of-two size equal to its "
                                           rf"stride, got {what}$"):
        compile_network(qnet)


def test_maxpool_4_accepted():
    """A power-of-two window other than 2 is fine (pshift = 2)."""
    qnet = quantized(Conv2d(1, 2, 3, padding=1), MaxPool2d(4), Flatten(), Linear(8, 3),
                     input_shape=(1, 8, 8))
    program = compile_network(qnet)
    assert program.layers[0].name == "0+1"
    assert program.layers[0].values["pshift"] == 2


@pytest.mark.parametrize("layers, name", [
    # first thing in the network: nothing to fuse into
    ([MaxPool2d(2), Conv2d(1, 2, 3), Flatten(), Linear(8, 2)], "0"),
    # after a max-pool that was already fused
    ([Conv2d(1, 2, 1), MaxPool2d(2), MaxPool2d(2), Flatten(), Linear(8, 2)], "2"),
    # after a max-pool with a ReLU fused into it (op "2+3")
    ([Conv2d(1, 2, 1), ReLU(), MaxPool2d(2), ReLU(), MaxPool2d(2), Flatten(), Linear(8, 2)],
     "4"),
])
def test_maxpool_not_after_conv(layers, name):
    qnet = quantized(*layers, input_shape=(1, 8, 8))
    with pytest.raises(NetworkError, match=rf"^layer {name} \(MaxPool2d\): the accelerator fuses "
                                           r"max-pool into the Conv2d before it; it must "
                                           r"directly follow one$"):
        compile_network(qnet)


def test_activation_after_flatten_refused():
    qnet = quantized(Conv2d(1, 2, 3), Flatten(), ReLU(), Linear(8, 2), input_shape=(1, 4, 4))
    with pytest.raises(NetworkError, match=r"^layer 1\+2 \(Flatten\): an activation after "
                                           r"Flatten is not supported by the accelerator; put "
                                           r"it before$"):
        compile_network(qnet)


# ------------------------------------------------------------------------------------------------
# Derived values


def test_digits_on_4x4(digits):
    """Every derived value of the bundled network on the default 4x4 array, worked out by hand:

    * layer 0+1+2: N=1, M=8, K=1·3·3=9, MB=8/4=2 -> 18 weight words;
      8×8 conv output, 2×2 pool -> 8×4×4 = 128 outputs;
    * layer 3+4+5: N=8, M=16, K=72, MB=4 -> 288 weight words; 16×2×2 = 64 outputs;
    * layer 7: Linear 64 -> 10, K=64, MB=3 -> 192 weight words;
    * weight ROM 18 + 288 + 192 = 498 words of 4 lanes; acc: layer 3+4+5's largest Σ|w| of
      an output channel, 3,335, times 128 = 426,880 < 2^19, plus the sign: 20 bits (K = 72
      alone would allow 72·128·127 = 1,170,432: 22); feature map: two regions of
      max(64, 128, 64, 10) = 128.
    """
    program = compile_network(digits, AcceleratorConfig(4, 4, algorithm="direct"))
    assert [layer.name for layer in program.layers] == ["0+1+2", "3+4+5", "7"]
    assert [layer.type for layer in program.layers] == [
        "Conv2d+ReLU+MaxPool2d", "Conv2d+ReLU+MaxPool2d", "Linear"]
    assert program.acc_width == 20
    assert program.weights.shape == (498, 4)
    assert program.fm_depth == 256
    assert (program.image_size, program.output_size) == (64, 10)
    assert [layer.values["K"] for layer in program.layers] == [9, 72, 64]
    assert [layer.values["MB"] for layer in program.layers] == [2, 4, 3]
    assert [layer.values["w_base"] for layer in program.layers] == [0, 18, 306]
    assert [layer.values["ch_base"] for layer in program.layers] == [0, 8, 24]
    assert len(program.params) == 8 + 16 + 10
    assert [layer.values["out_size"] for layer in program.layers] == [128, 64, 10]
    assert [layer.macs for layer in program.layers] == [8 * 64 * 9, 16 * 16 * 72, 640]
    assert program.ideal_cycles == sum(ceil_div(m, 16) for m in (4608, 18432, 640))
    # passes: R output channels × C output pixels each; every output pixel of every channel
    # block is covered exactly once (whole rows of the tile, C columns at a time)
    for layer in program.layers:
        v = layer.values
        expected = v["MB"] * sum(
            (v["rows_last"] if tr == v["ntr"] - 1 else v["Tr"])
            * sum(ceil_div(v["Tc"] if tc < v["ntc"] - 1 else v["OW"] - tc * v["Tc"], 4)
                  for tc in range(v["ntc"]))
            for tr in range(v["ntr"]))
        assert layer.passes == expected
    assert program.layers[2].passes == 3                       # Linear: one pixel, 3 blocks
    # the source and destination regions alternate
    assert [(layer.values["src"], layer.values["dst"]) for layer in program.layers] == [
        (0, 128), (128, 0), (0, 128)]


@pytest.mark.parametrize("rows, cols", [(4, 4), (3, 2), (1, 5)])
def test_weight_and_parameter_roms(digits, rows, cols):
    """Output-reuse weight ROM: word ``w_base + mb·K + k`` holds ``W[mb·R + r, k]`` in lane r,
    0 beyond M; the parameter ROM holds every channel's bias, M0 and shift in layer order."""
    program = compile_network(digits, AcceleratorConfig(rows, cols, dataflow="or",
                                                        algorithm="direct"))
    lanes = program.weights.shape[1]
    assert lanes >= rows
    for layer in program.layers:
        v = layer.values
        op = layer.gemm
        w = op.weight.reshape(v["M"], -1)
        for mb in range(v["MB"]):
            block = program.weights[v["w_base"] + mb * v["K"]:v["w_base"] + (mb + 1) * v["K"]]
            for r in range(lanes):
                m = mb * rows + r
                expected = w[m] if r < rows and m < v["M"] else np.zeros(v["K"], np.int8)
                assert np.array_equal(block[:, r], expected), (layer.name, mb, r)
        params = program.params[v["ch_base"]:v["ch_base"] + v["M"]]
        assert [p["bias"] for p in params] == op.bias.tolist()
        assert [p["multiplier"] for p in params] == op.multiplier.tolist()
        assert [p["shift"] for p in params] == op.shift.tolist()
    assert len(program.weights) == sum(layer.values["MB"] * layer.values["K"]
                                       for layer in program.layers)


def test_acc_width_holds_the_largest_sums():
    """acc_width is the signed width of the largest sum a layer can form: an input of
    −128·sign(w) against an output channel's weights gives 128·Σ|w| (of the channel with the
    largest Σ|w|), at least one product's width."""
    for n, k, features in [(1, 1, 1), (7, 3, 5), (3, 2, 200)]:
        qnet = quantized(Conv2d(n, 2, k), Flatten(), Linear(2 * (5 - k + 1) ** 2, features),
                         Linear(features, 2), input_shape=(n, 5, 5))
        program = compile_network(qnet)
        largest = max(128 * int(np.abs(op.weight.astype(np.int64)).reshape(
            len(op.weight), -1).sum(axis=1).max()) for op in qnet.ops if op.weight is not None)
        assert program.acc_width == max(largest, 128 * 127).bit_length() + 1


def test_reduction_width_bounds():
    """From the weights where they are known, capped by K products of 128·127 (a plan's K
    that holds fewer taps than the weights: no layer has one, the cap is the K-only rule)."""
    ones = SimpleNamespace(weight=np.ones((3, 175), np.int8))           # an average pool
    assert reduction_width(ones, 175) == (128 * 175).bit_length() + 1 == 16
    full = SimpleNamespace(weight=np.full((2, 72), -127, np.int8))
    assert reduction_width(full, 72) == (72 * 128 * 127).bit_length() + 1 == 22
    assert reduction_width(full, 9) == (9 * 128 * 127).bit_length() + 1
    assert reduction_width(SimpleNamespace(weight=None), 64) == (64 * 128 * 127).bit_length() + 1
    assert reduction_width(SimpleNamespace(weight=np.zeros((4, 9), np.int8)), 9) == 15


def test_tiles_override_honoured(digits):
    """``tiles`` sets Tr, Tc of the named layer (ragged last tiles allowed); others are planned."""
    cfg = AcceleratorConfig(4, 4, algorithm="direct")
    planned = compile_network(digits, cfg)
    program = compile_network(digits, cfg, tiles={"0+1+2": (6, 2)})
    v = program.layers[0].values
    assert (v["Tr"], v["Tc"], v["ntr"], v["ntc"]) == (6, 2, 2, 4)
    assert v["rows_last"] == 2
    assert (v["Tr_in"], v["Tc_in"]) == (8, 4)          # (T − 1)·S + K
    for a, b in zip(program.layers[1:], planned.layers[1:]):
        assert (a.values["Tr"], a.values["Tc"]) == (b.values["Tr"], b.values["Tc"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 8), cols=st.integers(1, 8), budget=st.integers(16, 4096),
       dataflow=st.sampled_from(["or", "ir", "wr", "auto"]),
       algorithm=st.sampled_from(["direct", "auto"]))
def test_planned_tiles_fit_and_cover(digits, rows, cols, budget, dataflow, algorithm):
    """Whatever the array and budget: either a clear ConfigError, or every layer's tiles fit the
    budget, cover the output exactly, are whole pooling windows, and every descriptor value fits
    its field."""
    try:
        program = compile_network(digits, AcceleratorConfig(
            rows, cols, input_buffer_bytes=max(budget, cols, rows), dataflow=dataflow,
            algorithm=algorithm))
    except ConfigError as exc:
        assert "needs" in str(exc) and "input_buffer_bytes" in str(exc)
        return
    cfg = program.config
    for layer in program.layers:
        v = layer.values
        banks = cfg.rows if layer.dataflow == "wr" else cfg.cols
        assert v["slot_words"] * banks <= cfg.input_buffer_bytes
        assert v["slot_words"] <= program.slot_words
        assert (v["ntr"] - 1) * v["Tr"] + v["rows_last"] == v["OH"]
        assert 1 <= v["rows_last"] <= v["Tr"]
        assert v["ntc"] == ceil_div(v["OW"], v["Tc"])
        if layer.algorithm == "direct":       # (Winograd tiles count 2×2 output blocks)
            pk = 1 << v["pshift"]
            assert v["Tr"] % pk == 0 or v["Tr"] == v["OH"]
            assert v["Tc"] % pk == 0 or v["Tc"] == v["OW"]
    for name, (signed, width) in program.descriptor_widths().items():
        for layer in program.layers:
            value = layer.values[name]
            if signed:
                assert -(1 << (width - 1)) <= value < 1 << (width - 1), name
            else:
                assert 0 <= value < 1 << width, name


def test_pointwise_layers_run_on_one_row():
    """A 1×1 stride-1 dense convolution without padding or fused pooling runs on its map as one
    row (the same CHW addresses): the C columns take C pixels across the map's rows, so a map
    5 wide leaves no column idle on 2 columns. Padding, a fused pool, a stride or a bigger
    kernel keep the rows."""
    qnet = quantized(Conv2d(3, 8, 3, padding=1), ReLU(), Conv2d(8, 8, 1), ReLU(),
                     Conv2d(8, 8, 1, padding=1), Conv2d(8, 4, 1), MaxPool2d(2),
                     Conv2d(4, 4, 1, stride=2), Flatten(), Linear(4 * 2 * 2, 3),
                     input_shape=(3, 7, 5))
    program = compile_network(qnet, AcceleratorConfig(2, 2))
    shapes = [(v["H"], v["W"], v["OH"], v["OW"]) for v in (layer.values
                                                            for layer in program.layers)]
    assert shapes[:5] == [(7, 5, 7, 5), (1, 35, 1, 35), (7, 5, 9, 7), (9, 7, 9, 7),
                          (4, 3, 2, 2)]
    pointwise = program.layers[1]
    assert pointwise.passes == -(-35 // 2) * 4       # 18 groups of 2 pixels, 4 blocks of 2
