"""TFLite import and the golden model against TensorFlow Lite Micro's reference kernels: the
three MLPerf Tiny models (every output and every intermediate tensor), single-operator models
on odd shapes (each operator, padding case and fused activation), the model boundary (int8 and
float inputs, SOFTMAX, DEQUANTIZE), ``cnnforge golden``, and the one-line refusals."""

import zlib
from pathlib import Path

import numpy as np
import pytest
from tflite_micro.python.tflite_micro import runtime

from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.network import NetworkError
from cnnforge.hw.frontend.tflite_import import activation_range, load_tflite
from cnnforge.hw.tools.cli import main
from cnnforge.sim.golden import conv2d_float, run_quantized, tflite_quantize_multiplier
from tests.tflite_models import TfliteBuilder, same_padding

MODELS = Path(__file__).resolve().parent.parent / "examples" / "mlperf_tiny"
MLPERF = {"kws": "kws_ref_model.tflite", "resnet8": "pretrainedResnet_quant.tflite",
          "vww": "vww_96_int8.tflite"}


def tflm_run(model, xs, preserve=False):
    """TensorFlow Lite Micro on each input of ``xs`` (one invoke per input of a batch-1 model,
    or one invoke of a batched model): the outputs, and with ``preserve`` every tensor."""
    config = (runtime.InterpreterConfig.kPreserveAllTensors if preserve
              else runtime.InterpreterConfig.kAllocationRecording)
    make = runtime.Interpreter.from_file if isinstance(model, (str, Path)) else \
        runtime.Interpreter.from_bytes
    size = model.stat().st_size if isinstance(model, Path) else len(model)
    interpreter = make(str(model) if isinstance(model, Path) else model,
                       arena_size=(1 << 20) + 10 * size, intrepreter_config=config)
    batch = int(interpreter.get_input_details(0)["shape"][0])
    outputs, tensors = [], []
    for start in range(0, len(xs), batch):
        interpreter.set_input(np.ascontiguousarray(xs[start:start + batch]), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0), copy=True))
        if preserve:
            tensors.append(interpreter)
    return np.concatenate(outputs), (interpreter if preserve else None)


def golden_outputs(network, xs):
    qnet = network.quantized
    result = run_quantized(qnet, qnet.model_input(xs))
    last = result[-1].reshape((len(xs),) + tuple(qnet.ops[-1].output_shape))
    return qnet.model_output(last), result


# ------------------------------------------------------------------------------------------------
# The MLPerf Tiny models


@pytest.fixture(scope="module", params=sorted(MLPERF))
def mlperf(request):
    path = MODELS / MLPERF[request.param]
    return request.param, path, load_network(path)


def test_mlperf_models_bit_exact(mlperf):
    """The KWS sample and 50 random int8 inputs per model: every output value identical to
    TensorFlow Lite Micro's."""
    name, path, network = mlperf
    qnet = network.quantized
    rng = np.random.default_rng(14)
    xs = rng.integers(-128, 128, (50,) + qnet.model_input_shape).astype(np.int8)
    if name == "kws":
        xs = np.concatenate([np.load(MODELS / "kws_sample_int8.npy"), xs])
    ours, _ = golden_outputs(network, xs)
    ref, _ = tflm_run(path, xs)
    assert ours.dtype == ref.dtype == np.int8 and ours.shape == ref.shape
    assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} of {ref.size} values differ"
    if name == "kws":
        assert int(ours[0].argmax()) == 5 and ours[0].max() == 127


def test_mlperf_every_tensor_bit_exact(mlperf):
    """Every op's output (the logits before the SOFTMAX included) equals the tensor TensorFlow
    Lite Micro computes, on one random input (all tensors preserved)."""
    name, path, network = mlperf
    qnet = network.quantized
    x = np.random.default_rng(7).integers(-128, 128, (1,) + qnet.model_input_shape).astype(
        np.int8)
    _, interpreter = tflm_run(path, x, preserve=True)
    _, result = golden_outputs(network, x)
    assert len(qnet.op_tensors) == len(qnet.ops)
    for op, values, (tensor, tname) in zip(qnet.ops, result, qnet.op_tensors):
        ref = np.asarray(interpreter.GetTensor(tensor, 0)["tensor_data"])
        if op.kind == "flatten":            # C, H, W order of the NHWC tensor it flattens
            ref = ref.reshape(1, *op.input_shape[1:], op.input_shape[0]).transpose(0, 3, 1, 2)
        ours = qnet.model_layout(values) if op.kind != "flatten" else values
        assert np.array_equal(ours.reshape(ref.shape), ref), (name, op.name, tname)


def test_mlperf_structure(mlperf):
    name, _, network = mlperf
    qnet = network.quantized
    kinds = [op.kind for op in qnet.ops]
    counts = {"kws": (10, 0, 4), "resnet8": (10, 3, 0), "vww": (28, 0, 13)}[name]
    assert kinds.count("conv") == counts[0]             # conv + depthwise + average pool
    assert kinds.count("add") == counts[1]
    assert sum(op.kind == "conv" and op.groups > 1 and op.output_offset is None
               for op in qnet.ops) == counts[2]          # depthwise
    assert kinds[-1] == "linear" and qnet.softmax is not None
    assert qnet.model_output_scale == 1 / 256 and qnet.model_output_zero_point == -128
    assert qnet.rounding == "gemmlowp"
    if name == "kws":                                   # the stem pads 4 above, 5 below
        assert qnet.ops[0].padding == (4, 1, 5, 1)
        assert qnet.ops[0].output_shape == (64, 25, 5)
        assert qnet.macs() == 2_664_768          # the average pool counted as 8000 MACs


# ------------------------------------------------------------------------------------------------
# Single-operator models on odd shapes


def _out_params(y):
    """int8 scale and zero point covering the float values ``y`` (and 0)."""
    lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    scale = max(hi - lo, 1e-3) / 255
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _conv_model(rng, batch, h, w, c, m, kernel, stride, padding, activation, depthwise=False,
                per_channel=True):
    """A CONV_2D or DEPTHWISE_CONV_2D model with random weights, biases and scales."""
    s_in, z_in = float(rng.uniform(0.01, 0.1)), int(rng.integers(-60, 60))
    kh, kw = kernel
    if depthwise:
        wq = rng.integers(-127, 128, (1, kh, kw, c)).astype(np.int8)
        m = c
    else:
        wq = rng.integers(-127, 128, (m, kh, kw, c)).astype(np.int8)
    s_w = rng.uniform(0.002, 0.02, m if per_channel else 1).astype(np.float32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    # the output range from the float convolution of random inputs
    xf = (rng.integers(-128, 128, (8, c, h, w)) - z_in) * s_in
    wf = (wq.transpose(3, 0, 1, 2) if depthwise else wq.transpose(0, 3, 1, 2)) * (
        s_w.reshape(-1, 1, 1, 1) if per_channel else s_w[0])
    b = TfliteBuilder()
    x = b.tensor([batch, h, w, c], scale=s_in, zero_point=z_in)
    if padding == "SAME":
        (oh, top, bottom), (ow, left, right) = (same_padding(n, k, st) for n, k, st in
                                                zip((h, w), kernel, stride))
    else:
        (oh, ow), (top, left, bottom, right) = ((h - kh) // stride[0] + 1,
                                                (w - kw) // stride[1] + 1), (0, 0, 0, 0)
    y = conv2d_float(xf.astype(np.float32), wf.astype(np.float32), None, stride,
                     (top, left, bottom, right), c if depthwise else 1)
    s_out, z_out = _out_params(y) if activation != "RELU_N1_TO_1" else (1 / 100, 0)
    wt = b.tensor(wq.shape, scale=s_w, data=wq, quantized_dimension=3 if depthwise else 0)
    bt = b.tensor([m], "int32", scale=(s_in * s_w.astype(np.float64)).astype(np.float32),
                  data=bias)
    out = b.tensor([batch, oh, ow, m], scale=s_out, zero_point=z_out)
    opts = dict(padding=padding, stride=stride, activation=activation)
    if depthwise:
        opts["depth_multiplier"] = 1
    b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, wt, bt], [out], **opts)
    return b.build([x], [out])


CONV_CASES = [  # h, w, c, m, kernel, stride, padding, activation, depthwise, per_channel
    (8, 8, 3, 5, (3, 3), (2, 2), "SAME", "RELU", False, True),          # pads 0 above, 1 below
    (13, 6, 1, 6, (10, 4), (2, 2), "SAME", "NONE", False, True),        # KWS stem: 4 / 5
    (7, 5, 4, 6, (2, 2), (1, 1), "SAME", "RELU6", False, False),        # even kernel: 0 / 1
    (6, 7, 2, 3, (3, 3), (1, 1), "VALID", "RELU_N1_TO_1", False, True),
    (5, 9, 3, 2, (1, 1), (2, 2), "SAME", "NONE", False, False),
    (9, 8, 5, 5, (3, 3), (2, 2), "SAME", "RELU6", True, True),          # depthwise, 1 / 1, 0 / 1
    (6, 6, 3, 3, (3, 3), (1, 1), "VALID", "NONE", True, True),
    (7, 4, 6, 6, (5, 3), (1, 2), "SAME", "RELU", True, False),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}-k{c[4][0]}{c[4][1]}"
                                                  f"s{c[5][0]}{c[5][1]}-{c[6]}-{c[7]}"
                                                  f"{'-dw' if c[8] else ''}" for c in CONV_CASES])
def test_conv_ops_bit_exact(tmp_path, case):
    h, w, c, m, kernel, stride, padding, act, depthwise, per_channel = case
    # (a seed of the case's text: hash() of a tuple with strings changes with every process)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    model = _conv_model(rng, 16, h, w, c, m, kernel, stride, padding, act, depthwise,
                        per_channel)
    path = tmp_path / "conv.tflite"
    path.write_bytes(model)
    network = load_tflite(path)
    xs = rng.integers(-128, 128, (16, h, w, c)).astype(np.int8)
    xs[-1] = rng.choice(np.array([-128, 127], np.int8), (h, w, c))
    ours, _ = golden_outputs(network, xs)
    ref, _ = tflm_run(model, xs)
    assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} of {ref.size} values differ"
    assert len(np.unique(ref)) > 8              # not a saturated, trivially equal output


def _pool_model(kind, batch, h, w, c, kernel, stride, activation, s=0.05, z=-7, s_out=None,
                z_out=None):
    b = TfliteBuilder()
    x = b.tensor([batch, h, w, c], scale=s, zero_point=z)
    oh, ow = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
    out = b.tensor([batch, oh, ow, c], scale=s if s_out is None else s_out,
                   zero_point=z if z_out is None else z_out)
    b.op(kind, [x], [out], padding="VALID", stride=stride, filter=kernel, activation=activation)
    return b.build([x], [out])


POOL_CASES = [  # kind, h, w, c, kernel, stride, activation
    ("AVERAGE_POOL_2D", 25, 5, 6, (25, 5), (1, 1), "NONE"),             # KWS: 125 values
    ("AVERAGE_POOL_2D", 8, 8, 5, (8, 8), (1, 1), "NONE"),               # ResNet-8: 64 (ties)
    ("AVERAGE_POOL_2D", 7, 6, 3, (2, 2), (2, 2), "RELU"),
    ("AVERAGE_POOL_2D", 3, 3, 7, (3, 3), (1, 1), "RELU6"),
    ("MAX_POOL_2D", 8, 9, 3, (2, 2), (2, 2), "NONE"),
    ("MAX_POOL_2D", 7, 7, 4, (3, 3), (2, 2), "RELU"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[f"{c[0]}-{c[1]}x{c[2]}-k{c[4][0]}{c[4][1]}-"
                                                  f"{c[6]}" for c in POOL_CASES])
def test_pool_ops_bit_exact(tmp_path, case):
    kind, h, w, c, kernel, stride, act = case
    model = _pool_model(kind, 32, h, w, c, kernel, stride, act)
    path = tmp_path / "pool.tflite"
    path.write_bytes(model)
    network = load_tflite(path)
    rng = np.random.default_rng(3)
    xs = rng.integers(-128, 128, (32, h, w, c)).astype(np.int8)
    xs[:8] = rng.integers(-3, 4, (8, h, w, c))           # small sums: many exact ties
    ours, _ = golden_outputs(network, xs)
    ref, _ = tflm_run(model, xs)
    assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} of {ref.size} values differ"


def _head_model(rng, batch, spatial, classes, softmax=True, float_io=False):
    """(batch, *spatial) -> [QUANTIZE] -> RESHAPE (flatten, NHWC order) -> FULLY_CONNECTED ->
    [SOFTMAX] -> [DEQUANTIZE]."""
    b = TfliteBuilder()
    s_in, z_in = 0.04, 11
    features = int(np.prod(spatial))
    if float_io:
        xf = b.tensor([batch, *spatial], "float32")
        x = b.tensor([batch, *spatial], scale=s_in, zero_point=z_in)
        b.op("QUANTIZE", [xf], [x])
    else:
        x = xf = b.tensor([batch, *spatial], scale=s_in, zero_point=z_in)
    flat = b.tensor([batch, features], scale=s_in, zero_point=z_in)
    b.op("RESHAPE", [x, b.tensor([2], "int32", data=np.array([batch, features]))], [flat],
         new_shape=[batch, features])
    wq = rng.integers(-127, 128, (classes, features)).astype(np.int8)
    s_w = 0.01
    logits = b.tensor([batch, classes], scale=0.15, zero_point=-3)
    b.op("FULLY_CONNECTED", [flat, b.tensor(wq.shape, scale=s_w, data=wq),
                             b.tensor([classes], "int32", scale=s_in * s_w,
                                      data=rng.integers(-500, 500, classes))],
         [logits], activation="NONE")
    out = logits
    if softmax:
        out = b.tensor([batch, classes], scale=1 / 256, zero_point=-128)
        b.op("SOFTMAX", [logits], [out], beta=1.0)
    if float_io:
        yf = b.tensor([batch, classes], "float32")
        b.op("DEQUANTIZE", [out], [yf])
        out = yf
    return b.build([xf], [out])


@pytest.mark.parametrize("spatial, softmax, float_io", [
    ((1, 1, 37), True, False), ((3, 2, 5), True, False), ((4, 3, 2), False, False),
    ((2, 3, 4), True, True)])
def test_reshape_fc_softmax_boundary(tmp_path, spatial, softmax, float_io):
    """RESHAPE in NHWC order decides the FC weight order; SOFTMAX on the host; QUANTIZE and
    DEQUANTIZE at the boundary."""
    rng = np.random.default_rng(len(spatial) + softmax)
    model = _head_model(rng, 16, spatial, 11, softmax, float_io)
    path = tmp_path / "head.tflite"
    path.write_bytes(model)
    network = load_tflite(path)
    qnet = network.quantized
    if float_io:
        xs = (rng.standard_normal((16, *spatial)) * 2).astype(np.float32)
        xs[0, 0, 0, 0] = 0.02                      # exactly a tie of x / s = 0.5
    else:
        xs = rng.integers(-128, 128, (16, *spatial)).astype(np.int8)
    ours, _ = golden_outputs(network, xs)
    ref, _ = tflm_run(model, xs)
    assert ours.dtype == ref.dtype
    assert np.array_equal(ours, ref)
    assert (qnet.softmax is not None) == softmax and qnet.dequantize == float_io


def test_add_bit_exact(tmp_path):
    """ADD of the input and a 1×1 convolution of it (different scales), fused ReLU."""
    rng = np.random.default_rng(5)
    b = TfliteBuilder()
    x = b.tensor([16, 5, 7, 3], scale=0.03, zero_point=-20)
    wq = rng.integers(-127, 128, (3, 1, 1, 3)).astype(np.int8)
    conv = b.tensor([16, 5, 7, 3], scale=0.07, zero_point=9)
    b.op("CONV_2D", [x, b.tensor(wq.shape, scale=[0.01, 0.02, 0.015], data=wq),
                     b.tensor([3], "int32", scale=[3e-4, 6e-4, 4.5e-4], data=[10, -40, 7])],
         [conv], padding="SAME", stride=(1, 1))
    out = b.tensor([16, 5, 7, 3], scale=0.05, zero_point=-128)
    b.op("ADD", [conv, x], [out], activation="RELU")
    model = b.build([x], [out])
    path = tmp_path / "add.tflite"
    path.write_bytes(model)
    xs = rng.integers(-128, 128, (16, 5, 7, 3)).astype(np.int8)
    ours, _ = golden_outputs(load_tflite(path), xs)
    assert np.array_equal(ours, tflm_run(model, xs)[0])


# ------------------------------------------------------------------------------------------------
# Arithmetic details


@pytest.mark.parametrize("real", [0.0, 1e-12, 2.0**-33, 0.3, 0.5, 0.75, 1 - 2.0**-40,
                                  0.123456789, 2.0**-31 * 3])
def test_tflite_quantize_multiplier(real):
    m0, shift = tflite_quantize_multiplier(real)
    if real == 0 or real < 2.0**-32:
        assert (m0, shift) == (0, 0) or m0 * 2.0 ** (shift - 31) == pytest.approx(real, rel=1e-9)
    else:
        assert 2**30 <= m0 < 2**31 and m0 * 2.0 ** (shift - 31) == pytest.approx(real, rel=1e-9)
    if real == 1 - 2.0**-40:                              # rounds up to 1.0: 2^30, shift 1
        assert (m0, shift) == (1 << 30, 1)


def test_activation_range():
    assert activation_range("NONE", 0.1, 3) == (-128, 127)
    assert activation_range("RELU", 0.1, -128) == (-128, 127)
    assert activation_range("RELU6", 0.0235294, -128) == (-128, 127)
    assert activation_range("RELU6", 0.05, -128) == (-128, -8)
    assert activation_range("RELU_N1_TO_1", 0.01, 0) == (-100, 100)


# ------------------------------------------------------------------------------------------------
# cnnforge golden and the refusals


def test_cli_golden(tmp_path, capsys):
    x = tmp_path / "kws.npy"
    np.save(x, np.load(MODELS / "kws_sample_int8.npy"))
    out, layers = tmp_path / "y.npy", tmp_path / "layers"
    assert main(["golden", str(MODELS / MLPERF["kws"]), "--inputs", str(x), "--outputs",
                 str(out), "--layers", str(layers)]) == 0
    text = capsys.readouterr().out
    assert "classes (argmax): 5" in text and "scale 0.00390625, zero point -128" in text
    y = np.load(out)
    assert y.dtype == np.int8 and y.shape == (1, 12)
    assert np.array_equal(y, tflm_run(MODELS / MLPERF["kws"], np.load(x))[0])
    files = sorted(p.name for p in layers.iterdir())
    assert len(files) == 12 and files[0] == "00_conv_0+1.npy"
    assert np.load(layers / files[0]).shape == (1, 25, 5, 64)          # NHWC


def test_cli_golden_float_inputs(tmp_path):
    """float32 inputs are quantized with the input's scale and zero point (TFLite's QUANTIZE)."""
    network = load_network(MODELS / MLPERF["kws"])
    qnet = network.quantized
    xq = np.load(MODELS / "kws_sample_int8.npy")
    xf = ((xq.astype(np.float32) - qnet.input_zero_point) * np.float32(qnet.input_scale))
    assert np.array_equal(qnet.model_input(xf), qnet.model_input(xq))


def _single(opcode, **options):
    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 2], scale=0.1, zero_point=0)
    y = b.tensor([1, 4, 4, 2], scale=0.1, zero_point=0)
    b.op(opcode, [x], [y], **options)
    return b.build([x], [y])


def _depthwise(multiplier=1, dilation=(1, 1), weights=None):
    b = TfliteBuilder()
    x = b.tensor([1, 6, 6, 2], scale=0.1, zero_point=0)
    wq = np.ones((1, 3, 3, 2 * multiplier), np.int8) if weights is None else weights
    y = b.tensor([1, 6, 6, 2 * multiplier], scale=0.5, zero_point=0)
    b.op("DEPTHWISE_CONV_2D", [x, b.tensor(wq.shape, scale=0.01, data=wq, quantized_dimension=3),
                               -1], [y], padding="SAME", depth_multiplier=multiplier,
         dilation=dilation)
    return b.build([x], [y])


REFUSALS = {
    "tanh": (lambda: _single("TANH"), "operator 0 (TANH, output 't1'): operator TANH is not "
             "supported"),
    "depth-multiplier": (lambda: _depthwise(multiplier=2), "depth_multiplier 2"),
    "dilation": (lambda: _depthwise(dilation=(2, 2)), "dilation (2, 2) is not supported"),
    "weight-128": (lambda: _depthwise(weights=np.full((1, 3, 3, 2), -128, np.int8)),
                   "hold -128"),
    "pool-padding": (lambda: _single("AVERAGE_POOL_2D", padding="SAME", filter=(3, 3)),
                     "pooling windows must lie inside the map"),
    "softmax-4d": (lambda: _single("SOFTMAX"), "only (1, N) logits are supported"),
    "after-softmax": (lambda: _after_softmax(), "operator 1 (RESHAPE, output 't2'): reads "
                      "the output of a SOFTMAX"),
    "softmax-output": (lambda: _after_softmax(scale=0.1), "must be scale 1/256"),
    "float-input": (lambda: _float_input(), "operator 0 (MAX_POOL_2D, output 't1'): reads the "
                    "float32 model input: a QUANTIZE must come first"),
}


def _float_input():
    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 2], "float32")
    y = b.tensor([1, 2, 2, 2], scale=0.1, zero_point=0)
    b.op("MAX_POOL_2D", [x], [y], filter=(2, 2), stride=(2, 2))
    return b.build([x], [y])


def _after_softmax(scale=1 / 256):
    b = TfliteBuilder()
    x = b.tensor([1, 10], scale=0.1, zero_point=0)
    y = b.tensor([1, 10], scale=scale, zero_point=-128)
    z = b.tensor([1, 10], scale=scale, zero_point=-128)
    b.op("SOFTMAX", [x], [y])
    b.op("RESHAPE", [y], [z], new_shape=[1, 10])
    return b.build([x], [z])


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(tmp_path, case, capsys):
    make, expected = REFUSALS[case]
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(make())
    with pytest.raises(NetworkError) as info:
        load_tflite(path)
    message = str(info.value)
    assert message.startswith(f"{path}: operator ") and expected in message, message
    assert "\n" not in message
    # the command line: one line, exit status 2, nothing written
    out = tmp_path / "y.npy"
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 4, 2), np.int8))
    assert main(["golden", str(path), "--inputs", str(tmp_path / "x.npy"), "--outputs",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and not out.exists()


def test_unreadable_files(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(NetworkError, match="cannot read the TFLite model"):
        load_tflite(bad)
    with pytest.raises(NetworkError, match="no such TFLite file"):
        load_tflite(tmp_path / "missing.tflite")


def test_wrong_input_shape_is_a_user_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 32, 32, 3), np.int8))
    assert main(["golden", str(MODELS / MLPERF["kws"]), "--inputs",
                 str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "the model expects (49, 10, 1) (NHWC)" in err and err.count("\n") == 1
