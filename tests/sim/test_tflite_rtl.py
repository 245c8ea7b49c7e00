"""TFLite models in the generated Verilog on Verilator: small models built on odd shapes (the
KWS stem's 10×4 stride-2 convolution with 4 / 5 rows of SAME padding, VWW's stride-2 SAME
layers padding only below and right, depthwise, residual ADD, global average pool with TFLite's
rounding, RESHAPE, FULLY_CONNECTED, SOFTMAX on the host) bit-exact with the golden model on
every layer map and with TensorFlow Lite Micro on the outputs (the MLPerf Tiny models:
``test_mlperf_rtl.py``)."""

import math

import numpy as np
import pytest

from cnnforge.hw.frontend.tflite_import import load_tflite
from cnnforge.sim.accel import AcceleratorSim
from cnnforge.sim.golden import conv2d_float
from tests.helpers import build_dir, check_sim, compile_tight
from tests.tflite_models import TfliteBuilder, run_tflm, same_padding


class _Chain:
    """A random int8 model built layer by layer, each tensor's scale and zero point taken from
    the float values of a batch of random inputs (so that no layer saturates)."""

    def __init__(self, rng, batch, hwc):
        self.rng, self.batch = rng, batch
        self.b = TfliteBuilder()
        s, z = 0.05, int(rng.integers(-40, 40))
        self.x = self.t = self.b.tensor([batch, *hwc], scale=s, zero_point=z)
        self.sz = (s, z)
        q = rng.integers(-128, 128, (64, hwc[2], hwc[0], hwc[1]))
        self.f = ((q - z) * s).astype(np.float32)            # float values, NCHW

    def _out(self, y, shape):
        lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
        s = max(hi - lo, 1e-3) / 255
        z = int(np.clip(round(-128 - lo / s), -128, 127))
        return self.b.tensor([self.batch, *shape], scale=s, zero_point=z), (s, z)

    def conv(self, m, kernel, stride, padding="SAME", act="RELU", depthwise=False):
        rng, (s_in, _) = self.rng, self.sz
        c, h, w = self.f.shape[1:]
        (kh, kw), m = kernel, c if depthwise else m
        wq = rng.integers(-127, 128, (1, kh, kw, c) if depthwise else (m, kh, kw, c))
        k = kh * kw * (1 if depthwise else c)
        s_w = (rng.uniform(0.5, 1.5, m) / (math.sqrt(k) * 73 * float(self.f.std() + 1e-3)))
        s_w = s_w.astype(np.float32)
        bias = np.round(rng.standard_normal(m) * 0.3 / (s_in * s_w.astype(np.float64)))
        if padding == "SAME":
            (_, top, bottom), (_, left, right) = (same_padding(n, kk, ss) for n, kk, ss in
                                                  zip((h, w), kernel, stride))
            padding4 = (top, left, bottom, right)
        else:
            padding4 = (0, 0, 0, 0)
        wf = (wq.transpose(3, 0, 1, 2) if depthwise else wq.transpose(0, 3, 1, 2)) * \
            s_w.reshape(-1, 1, 1, 1)
        y = conv2d_float(self.f, wf.astype(np.float32),
                         (bias * s_in * s_w).astype(np.float32), stride, padding4,
                         c if depthwise else 1)
        y = {"RELU": np.maximum(y, 0), "RELU6": np.clip(y, 0, 6)}.get(act, y)
        out, sz = self._out(y, (y.shape[2], y.shape[3], m))
        wt = self.b.tensor(wq.shape, scale=s_w, data=wq, quantized_dimension=3 if depthwise
                           else 0)
        bt = self.b.tensor([m], "int32", scale=(s_in * s_w.astype(np.float64)).astype(
            np.float32), data=bias)
        opts = dict(padding=padding, stride=stride, activation=act)
        if depthwise:
            opts["depth_multiplier"] = 1
        self.b.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [self.t, wt, bt], [out],
                  **opts)
        self.t, self.sz, self.f = out, sz, y
        return self

    def residual(self):
        """ADD of the current tensor and a 1×1 convolution of it, fused ReLU."""
        skip, skip_f = self.t, self.f
        self.conv(self.f.shape[1], (1, 1), (1, 1), act="NONE")
        y = np.maximum(self.f + skip_f, 0)
        out, sz = self._out(y, (y.shape[2], y.shape[3], y.shape[1]))
        self.b.op("ADD", [self.t, skip], [out], activation="RELU")
        self.t, self.sz, self.f = out, sz, y
        return self

    def head(self, classes):
        """Global AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX."""
        c, h, w = self.f.shape[1:]
        pooled = self.b.tensor([self.batch, 1, 1, c], scale=self.sz[0], zero_point=self.sz[1])
        self.b.op("AVERAGE_POOL_2D", [self.t], [pooled], padding="VALID", filter=(h, w))
        flat = self.b.tensor([self.batch, c], scale=self.sz[0], zero_point=self.sz[1])
        self.b.op("RESHAPE", [pooled], [flat], new_shape=[self.batch, c])
        wq = self.rng.integers(-127, 128, (classes, c))
        s_w = 1 / (math.sqrt(c) * 73 * float(self.f.mean(axis=(2, 3)).std() + 1e-3))
        logits = self.b.tensor([self.batch, classes], scale=0.1, zero_point=0)
        self.b.op("FULLY_CONNECTED", [flat, self.b.tensor(wq.shape, scale=s_w, data=wq),
                                      self.b.tensor([classes], "int32",
                                                    scale=self.sz[0] * s_w,
                                                    data=np.zeros(classes))], [logits])
        out = self.b.tensor([self.batch, classes], scale=1 / 256, zero_point=-128)
        self.b.op("SOFTMAX", [logits], [out])
        return self.b.build([self.x], [out])


def _kws_like(rng, batch):
    """KWS's shape of network on a 13×6 input: 10×4 stride-2 stem (4 / 5 rows of padding),
    depthwise-separable blocks, average pool, FC, SOFTMAX."""
    chain = _Chain(rng, batch, (13, 6, 1)).conv(6, (10, 4), (2, 2))
    chain.conv(0, (3, 3), (1, 1), depthwise=True).conv(5, (1, 1), (1, 1))
    chain.conv(0, (3, 3), (2, 2), act="RELU6", depthwise=True)     # 7x3 -> 4x2: 1/1, 1/1
    return chain.conv(6, (1, 1), (1, 1)).head(5)


def _vww_resnet_like(rng, batch):
    """VWW's stride-2 SAME layers on even sizes (padding only below and right) and a ResNet
    residual block."""
    chain = _Chain(rng, batch, (10, 8, 3)).conv(5, (3, 3), (2, 2), act="RELU6")   # 0/1, 0/1
    chain.conv(0, (3, 3), (2, 2), act="RELU6", depthwise=True)                  # 5x4 -> 3x2
    chain.conv(7, (1, 1), (1, 1)).residual()
    return chain.conv(6, (3, 3), (1, 1), act="RELU").head(3)


@pytest.mark.parametrize("which, array", [("kws", (4, 4)), ("vww-resnet", (3, 2))])
def test_small_tflite_models_verilator(tmp_path, which, array):
    """Tight tiles (many per layer), every layer map bit-exact, the outputs (after the host's
    SOFTMAX) identical to TensorFlow Lite Micro's."""
    rng = np.random.default_rng(len(which))
    make = _kws_like if which == "kws" else _vww_resnet_like
    model = make(rng, 1)
    path = tmp_path / f"{which}.tflite"
    path.write_bytes(model)
    qnet = load_tflite(path).quantized
    assert any(len(op.padding) == 4 for op in qnet.ops)       # asymmetric padding present
    program = compile_tight(qnet, *array)
    xs = rng.integers(-128, 128, (3,) + qnet.model_input_shape).astype(np.int8)
    images = qnet.model_input(xs)
    sim = AcceleratorSim(program, build_dir(f"tflite-{which}-{array[0]}x{array[1]}")).build()
    result = sim.run(images, gaps=0.1, backpressure=0.2, seed=3)
    check_sim(program, images, result)
    last = result.logits.reshape((len(xs),) + qnet.ops[-1].output_shape)
    outputs = qnet.model_output(last)
    expected = np.concatenate([run_tflm(model, x[None]) for x in xs])
    assert np.array_equal(outputs, expected)
