"""Post-training static quantization to int8, integer-only (Jacob et al., CVPR 2018).

The arithmetic contract (``docs/arithmetic.md``):

* activations int8, per-tensor scale ``s`` and zero point ``z`` (asymmetric), calibrated from the
  min/max of sample inputs (the range always includes 0, so 0.0 is exactly representable and
  zero padding is the zero point);
* weights int8 in [−127, 127], symmetric, one scale per output channel;
* bias int32 with scale ``s_in·s_w[m]``, with the input zero point folded in:
  ``Σ w·(x − z_in) + b = Σ w·x + (b − z_in·Σ w)``;
* requantization by the fixed-point multiplier ``M = s_in·s_w[m]/s_out = M0·2^(−31−n)``,
  ``M0`` in [2^30, 2^31), ``n`` in [0, 31] (gemmlowp); ``M < 1`` is guaranteed by raising
  ``s_out`` if a layer would need ``M ≥ 1``;
* ReLU / ReLU6 fused into the preceding op as clamp bounds;
* average pooling as a depthwise convolution with all-ones weights of scale 1/(kh·kw) (exact
  sum, one rounding in the requantization);
* residual add as TFLite's int8 add: both inputs rescaled to 2·max(s_1, s_2) with 20 fractional
  bits, summed, requantized to ``s_out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnforge.hw.frontend.network import (Add, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, NetworkError, ReLU,
                      ReLU6, Sequential)
from cnnforge.sim.golden import tflite_quantize_multiplier

__all__ = ["QuantOp", "QuantizedNetwork", "quantize", "quantize_multiplier", "activation_params",
           "set_add_params", "fused_activations", "clamp_bounds"]

QMIN, QMAX = -128, 127
WMAX = 127


def quantize_multiplier(real):
    """Split a real multiplier 0 ≤ M < 1 into ``(M0, n)`` with ``M ≈ M0 · 2^(−31−n)``.

    ``M0`` is an int32 in [2^30, 2^31) and ``n`` in [0, 31] (TFLite's ``QuantizeMultiplier``
    restricted to right shifts). A multiplier below 2^−32 (after rounding to 31 significant bits)
    returns ``(0, 0)``: it cannot be represented with ``n`` ≤ 31, and |acc·M| < 1/2 for every
    int32 ``acc``, so the exact result rounds to 0 anyway. A multiplier within 2^−32 of 1 (which
    would round to ``M0`` = 2^31) returns ``(2^31 − 1, 0)``.

    Raises
    ------
    ValueError
        If ``real`` is negative or ≥ 1.
    """
    if not 0 <= real < 1:
        raise ValueError(f"requantization multiplier {real} is outside [0, 1)")
    m0, shift = tflite_quantize_multiplier(real)
    if shift > 0:                                     # real rounded up to 1.0
        return (1 << 31) - 1, 0
    return m0, -shift


def activation_params(lo, hi):
    """Asymmetric int8 scale and zero point for a float range (widened to include 0).

    Returns ``(scale, zero_point)`` with ``zero_point`` in [−128, 127] such that 0.0 is exactly
    representable (Jacob et al. 2018 §2.1)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / (QMAX - QMIN)
    zero_point = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return scale, zero_point


@dataclass
class QuantOp:
    """One op of a quantized network.

    Members
    -------
    kind : str
        ``"conv"`` (Conv2d, depthwise included, and AvgPool2d), ``"linear"``, ``"maxpool"``,
        ``"flatten"`` or ``"add"``.
    name : str
        The ``torch.nn`` layer indices it covers, e.g. ``"0+1"`` for Conv2d fused with ReLU.
    layers : list of Layer
    input_shape, output_shape : tuple
        Per image, (C, H, W) or (F,).
    input_scale, output_scale : float; input_zero_point, output_zero_point : int
    act_min, act_max : int
        Output clamp bounds (activation fused in).
    weight : ndarray int8 (M, N, kh, kw) or (O, F); weight_scale : ndarray float64 (M,)
    bias : ndarray int32 (M,)
        Quantized bias with ``−z_in·Σ w`` folded in.
    bias_raw : ndarray int32 (M,)
        Quantized bias before folding.
    multiplier, shift : ndarray int64 (M,)
        Requantization ``M0`` and right shift ``n`` per output channel.
    kernel_size, stride, padding : (int, int)
    groups : int
        Grouped convolution (``groups`` = channels: depthwise; AvgPool2d is depthwise).
    inputs : list of int
        Indices of the ops whose outputs this op reads (−1: the network input); one, or two for
        ``"add"``.
    input2_scale : float; input2_zero_point : int
        The second input of an ``"add"``.
    add_multiplier, add_shift : tuple of two ints
        An ``"add"``'s input rescaling (``M0``, ``n``) per input; ``multiplier``/``shift`` hold
        its output requantization (the same value for every channel).
    rounding : str
        How ``multiplier``/``shift`` round (:func:`cnnforge.sim.golden.requantize`):
        ``"gemmlowp"`` (networks quantized by :func:`quantize`, TFLite models) or
        ``"nearest-even"`` (imported ONNX QDQ models, as ONNX Runtime).
    output_offset : int or None
        What the requantizer adds before the clamp when it is not ``output_zero_point``
        (:attr:`requant_offset`): TFLite's int8 AVERAGE_POOL_2D rounds the mean of the raw
        values, zero point included, so its requantizer adds 0.
    """

    kind: str
    name: str
    layers: list
    input_shape: tuple
    output_shape: tuple
    input_scale: float
    input_zero_point: int
    output_scale: float = 0.0
    output_zero_point: int = 0
    act_min: int = QMIN
    act_max: int = QMAX
    weight: np.ndarray = None
    weight_scale: np.ndarray = None
    bias: np.ndarray = None
    bias_raw: np.ndarray = None
    multiplier: np.ndarray = None
    shift: np.ndarray = None
    kernel_size: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    inputs: list = None
    input2_scale: float = 0.0
    input2_zero_point: int = 0
    add_multiplier: tuple = None
    add_shift: tuple = None
    rounding: str = "gemmlowp"
    output_offset: int = None

    @property
    def requant_offset(self):
        """The value added after requantization, before the clamp: ``output_offset`` if set,
        else the output zero point."""
        return self.output_zero_point if self.output_offset is None else self.output_offset

    @property
    def type(self):
        return "+".join(layer.type for layer in self.layers)

    @property
    def category(self):
        """What the op is, for per-type reports: ``"conv"``, ``"depthwise"``, ``"pointwise"``
        (a dense 1×1 convolution), ``"fc"``, ``"avgpool"``, ``"add"``, ``"maxpool"`` or
        ``"flatten"``."""
        if self.kind == "linear":
            return "fc"
        if self.kind != "conv":
            return self.kind
        if isinstance(self.layers[0], AvgPool2d):
            return "avgpool"
        if self.groups > 1:
            return "depthwise"
        return "pointwise" if tuple(self.kernel_size) == (1, 1) else "conv"

    @property
    def macs(self):
        """Multiply-accumulates per image."""
        if self.kind == "conv":             # weight (M, N/groups, kh, kw): groups included
            m, oh, ow = self.output_shape
            return m * oh * ow * int(np.prod(self.weight.shape[1:]))
        if self.kind == "linear":
            return int(self.weight.size)
        return 0


@dataclass
class QuantizedNetwork:
    """An int8 network: the ops the golden model and the hardware execute.

    Members
    -------
    network : Sequential
        The float network it came from.
    ops : list of QuantOp
    input_scale : float; input_zero_point : int
        How float inputs map to the int8 input tensor.
    """

    network: Sequential
    ops: list = field(default_factory=list)
    input_scale: float = 1.0
    input_zero_point: int = 0

    @property
    def output_scale(self):
        return self.ops[-1].output_scale

    @property
    def output_zero_point(self):
        return self.ops[-1].output_zero_point

    @property
    def rounding(self):
        """The requantizers' rounding, one for the whole network (the hardware has one
        post-processor): ``"gemmlowp"`` or ``"nearest-even"``.

        Raises
        ------
        NetworkError
            If the ops disagree.
        """
        kinds = sorted({op.rounding for op in self.ops})
        if len(kinds) > 1:
            raise NetworkError(f"network: ops mix requantizer roundings {kinds}; the hardware "
                               "has one post-processor")
        return kinds[0] if kinds else "gemmlowp"

    def quantize_input(self, x):
        """float32 (B, C, H, W) -> int8 with the network's input scale and zero point
        (round half to even, saturating)."""
        q = np.round(np.asarray(x, np.float64) / self.input_scale) + self.input_zero_point
        return np.clip(q, QMIN, QMAX).astype(np.int8)

    def dequantize_output(self, y):
        return (np.asarray(y, np.float64) - self.output_zero_point) * self.output_scale

    @property
    def model_input_shape(self):
        """One input's shape as the user gives it: (C, H, W) here (a TFLite model: NHWC)."""
        return tuple(self.network.input_shape)

    @property
    def model_output_scale(self):
        """Scale of :meth:`model_output`'s values."""
        return self.output_scale

    @property
    def model_output_zero_point(self):
        """Zero point of :meth:`model_output`'s values."""
        return self.output_zero_point

    #: How :meth:`model_input` names the expected shape in its error.
    EXPECTS = "per image, the network expects {}"

    def model_input(self, x):
        """Inputs as the user gives them -> the accelerator's int8 (B, C, H, W).

        Parameters
        ----------
        x : ndarray, shape (B, *model_input_shape) or model_input_shape
            int8 values are used as they are; float values are quantized with
            :meth:`quantize_input`.

        Raises
        ------
        ValueError
            For another shape or dtype.
        """
        x = np.asarray(x)
        shape = self.model_input_shape
        if x.shape == shape:
            x = x[None]
        if x.shape[1:] != shape:
            raise ValueError(f"inputs have shape {x.shape[1:]} " + self.EXPECTS.format(shape))
        if x.dtype != np.int8 and x.dtype.kind not in "fiu":
            raise ValueError(f"inputs are {x.dtype}: give int8 values (used as they are) or "
                             "float values (quantized with the input's scale and zero point)")
        nchw = self.input_nchw(x)
        if x.dtype == np.int8:
            return np.ascontiguousarray(nchw)
        return self.quantize_input(nchw.astype(np.float32))

    def input_nchw(self, x):
        """A batch of inputs in the user's layout -> (B, C, H, W) (here unchanged)."""
        return x

    def dequantize_input(self, xq):
        """int8 inputs -> their float values, ``(q − z)·s`` in float32."""
        return (np.asarray(xq).astype(np.float32) - self.input_zero_point) * np.float32(
            self.input_scale)

    def float_input(self, x):
        """The float network's input for the inputs ``x`` of :meth:`model_input` (float NCHW
        as given; int8 values dequantized)."""
        x = np.asarray(x)
        if x.dtype == np.int8:
            return self.dequantize_input(self.model_input(x))
        return x.astype(np.float32).reshape((-1,) + tuple(self.network.input_shape))

    def model_layout(self, y):
        """An op's output (B, C, H, W) or (B, F) in the layout the network's user works in
        (here NCHW, unchanged; a TFLite model's NHWC)."""
        return np.asarray(y)

    def model_output(self, y):
        """The last op's int8 output (B, ...) -> the network's output as the user sees it (here
        the same values; a TFLite model applies its layout and SOFTMAX)."""
        return self.model_layout(y)

    def macs(self):
        return sum(op.macs for op in self.ops)


def _quantize_weights(w):
    """Per-output-channel symmetric int8: returns (q int8, scale float64 (M,))."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(flat).max(axis=1)
    live = amax > 0
    # an all-zero channel has no scale of its own: borrow the largest live one, so that it does
    # not force s_out up through M = s_in·s_w/s_out < 1 (a scale of 1.0 did)
    fallback = amax[live].max() / WMAX if live.any() else 1.0
    scale = np.where(live, amax / WMAX, fallback)
    q = np.clip(np.round(flat / scale[:, None]), -WMAX, WMAX).astype(np.int8)
    return q.reshape(w.shape), scale


def quantize(network, calibration=None):
    """Quantize a float network post-training (static, int8, integer-only).

    Parameters
    ----------
    network : Sequential
        With weights loaded.
    calibration : ndarray, float32, shape (B, C, H, W), optional
        Sample inputs; defaults to ``network.calibration``.

    Returns
    -------
    QuantizedNetwork
        ``network.quantized`` as it is when that attribute is set: a network imported from an
        ONNX QDQ model (:func:`cnnforge.hw.frontend.onnx_import.load_onnx`) carries the quantization
        given by the model's own scales and zero points, and ``calibration`` is not used.

    Raises
    ------
    NetworkError
        If there is no calibration data, or an activation has nothing to fuse into.
    """
    quantized = getattr(network, "quantized", None)
    if quantized is not None:
        return quantized
    network.check_loaded()
    calib = network.calibration if calibration is None else calibration
    if calib is None or len(calib) == 0:
        raise NetworkError("network: no calibration data (attach `calibration` to the network "
                           "or pass it to quantize())")
    calib = np.asarray(calib, np.float32)
    if calib.shape[1:] != network.input_shape:
        raise NetworkError(f"network: calibration data has shape {calib.shape[1:]}, expected "
                           f"{network.input_shape}")
    outs = network.forward(calib, intermediates=True)
    in_scale, in_zp = activation_params(calib.min(), calib.max())
    qnet = QuantizedNetwork(network, input_scale=in_scale, input_zero_point=in_zp)
    layer_op = {-1: -1}                 # layer index -> index of the op producing its output

    def out_params(op_index):
        if op_index < 0:
            return in_scale, in_zp
        return qnet.ops[op_index].output_scale, qnet.ops[op_index].output_zero_point

    for layer, shape in zip(network.layers, network.shapes):
        src = layer.sources[0]
        scale, zp = out_params(layer_op[src])
        if isinstance(layer, (ReLU, ReLU6)):
            if not qnet.ops or layer_op[src] != len(qnet.ops) - 1 or src < 0:
                raise layer.error("an activation must directly follow the Conv2d, Linear, "
                                  "AvgPool2d, Add, MaxPool2d or Flatten it is fused into")
            if network.consumers(src) != [layer.index]:
                raise layer.error(f"its input (layer {src}) is also read by layers "
                                  f"{[c for c in network.consumers(src) if c != layer.index]}; "
                                  "an activation is fused into the op before it, so that op's "
                                  "output must have no other reader")
            op = qnet.ops[-1]
            op.layers.append(layer)
            op.name = f"{op.name}+{layer.index}"
            layer_op[layer.index] = len(qnet.ops) - 1
            if op.kind in ("conv", "linear", "add"):
                continue                     # calibrated from the activated output already
            # after max-pool / flatten: clamp at the quantized 0 (and 6)
            op.act_min = max(op.act_min, op.output_zero_point)
            if isinstance(layer, ReLU6):
                op.act_max = min(op.act_max, int(round(6 / op.output_scale)) + op.output_zero_point)
            continue
        common = dict(name=str(layer.index), layers=[layer], input_shape=shape.input,
                      output_shape=shape.output, input_scale=scale, input_zero_point=zp,
                      inputs=[layer_op[s] for s in layer.sources])
        if isinstance(layer, (Conv2d, Linear)):
            kind = "conv" if isinstance(layer, Conv2d) else "linear"
            qw, w_scale = _quantize_weights(layer.weight)
            op = QuantOp(kind, weight=qw, weight_scale=w_scale, **common)
            if kind == "conv":
                op.kernel_size, op.stride, op.padding = (layer.kernel_size, layer.stride,
                                                        layer.padding)
                op.groups = layer.groups
            qnet.ops.append(op)
        elif isinstance(layer, AvgPool2d):
            (kh, kw), stride = layer.window(shape.input)
            c = shape.input[0]
            qnet.ops.append(QuantOp("conv", weight=np.ones((c, 1, kh, kw), np.int8),
                                    weight_scale=np.full(c, 1.0 / (kh * kw)),
                                    kernel_size=(kh, kw), stride=stride, groups=c, **common))
        elif isinstance(layer, Add):
            s2, z2 = out_params(layer_op[layer.sources[1]])
            qnet.ops.append(QuantOp("add", input2_scale=s2, input2_zero_point=z2, **common))
        elif isinstance(layer, MaxPool2d):
            qnet.ops.append(QuantOp("maxpool", kernel_size=layer.kernel_size,
                                    stride=layer.stride, output_scale=scale,
                                    output_zero_point=zp, **common))
        elif isinstance(layer, Flatten):
            qnet.ops.append(QuantOp("flatten", output_scale=scale, output_zero_point=zp,
                                    **common))
        else:
            raise layer.error("cannot be quantized")
        layer_op[layer.index] = len(qnet.ops) - 1
        op = qnet.ops[-1]
        if op.kind in ("conv", "linear"):
            _finish_gemm_op(op, network, outs)
        elif op.kind == "add":
            _finish_add_op(op, network, outs)
    return qnet


def fused_activations(network, index):
    """The ReLU/ReLU6 layers fused into layer ``index``: the chain right after it, each layer
    the only reader of its input (what :func:`quantize` and the ONNX importer fuse)."""
    fused = []
    while True:
        readers = network.consumers(index)
        if (len(readers) == 1 and readers[0] == index + 1
                and isinstance(network.layers[index + 1], (ReLU, ReLU6))):
            index += 1
            fused.append(network.layers[index])
        else:
            return fused


def _fused_output(network, outs, index):
    """:func:`fused_activations` of layer ``index`` and the float output after them (what the
    op's output range is calibrated on)."""
    fused = fused_activations(network, index)
    return fused, outs[fused[-1].index if fused else index]


def clamp_bounds(op, fused):
    """Set ``op``'s clamp from its output scale and zero point and the fused activations:
    ReLU → ``z_out``..127, ReLU6 → ``z_out``..``z_out + round(6/s_out)``."""
    op.act_min, op.act_max = QMIN, QMAX
    if fused:
        op.act_min = max(QMIN, op.output_zero_point)
        if any(isinstance(act, ReLU6) for act in fused):
            op.act_max = min(QMAX, op.output_zero_point + int(round(6.0 / op.output_scale)))


def _finish_add_op(op, network, outs):
    """TFLite's int8 add parameters (``tflite/kernels/add.cc``, PrepareGeneralSubOp): inputs
    rescaled to twice the larger input scale with 20 fractional bits, output multiplier
    ``2·max(s_1, s_2) / (2^20·s_out)``."""
    fused, y = _fused_output(network, outs, op.layers[0].index)
    out_scale, out_zp = activation_params(y.min(), y.max())
    twice_max = 2 * max(op.input_scale, op.input2_scale)
    real_out = twice_max / ((1 << 20) * out_scale)
    if real_out >= 1:                   # an output scale below 2^-19 of the inputs' scale
        out_scale = twice_max / (1 << 20) * (1 + 1e-6)
        out_zp = int(np.clip(round(QMIN - min(float(y.min()), 0.0) / out_scale), QMIN, QMAX))
        real_out = twice_max / ((1 << 20) * out_scale)
    op.output_scale, op.output_zero_point = out_scale, out_zp
    set_add_params(op, real_out)
    clamp_bounds(op, fused)


def set_add_params(op, real_out):
    """Fill an ``"add"`` op's rescaling (from its input scales) and its output requantization
    by ``real_out`` (one value, repeated per channel); zero bias."""
    twice_max = 2 * max(op.input_scale, op.input2_scale)
    pairs = [quantize_multiplier(op.input_scale / twice_max),
             quantize_multiplier(op.input2_scale / twice_max)]
    op.add_multiplier = tuple(p[0] for p in pairs)
    op.add_shift = tuple(p[1] for p in pairs)
    channels = op.output_shape[0]
    m0, n = quantize_multiplier(real_out)
    op.multiplier = np.full(channels, m0, np.int64)
    op.shift = np.full(channels, n, np.int64)
    op.bias = op.bias_raw = np.zeros(channels, np.int32)


def _finish_gemm_op(op, network, outs):
    """Calibrate a Conv2d/Linear/AvgPool2d op's output (after its fused activation, which is
    added to the op later in the layer loop: the range is taken from the float output of the
    last layer the op will cover) and derive bias, multipliers and clamp bounds."""
    fused, y = _fused_output(network, outs, op.layers[0].index)
    out_scale, out_zp = activation_params(y.min(), y.max())
    s_in = op.input_scale
    # M = s_in·s_w/s_out must stay below 1 for a right-shift-only requantizer
    need = s_in * op.weight_scale.max() * (1 + 1e-6)
    if out_scale <= need:
        lo = min(float(y.min()), 0.0)
        out_scale = need
        out_zp = int(np.clip(round(QMIN - lo / out_scale), QMIN, QMAX))
    op.output_scale, op.output_zero_point = out_scale, out_zp
    layer = op.layers[0]
    m = op.weight.shape[0]
    bias_f = getattr(layer, "bias", None)
    bias_f = bias_f if bias_f is not None else np.zeros(m, np.float32)
    bias_q = np.round(bias_f.astype(np.float64) / (s_in * op.weight_scale))
    bias_q = np.clip(bias_q, -(1 << 31), (1 << 31) - 1).astype(np.int64)
    op.bias_raw = bias_q.astype(np.int32)
    wsum = op.weight.reshape(m, -1).astype(np.int64).sum(axis=1)
    folded = bias_q - op.input_zero_point * wsum
    k = op.weight[0].size
    worst = np.abs(folded) + k * 128 * WMAX
    if worst.max() >= 1 << 31:
        raise layer.error("accumulator could overflow int32 (bias too large for its scale)")
    op.bias = folded.astype(np.int32)
    real = s_in * op.weight_scale / out_scale
    pairs = [quantize_multiplier(r) for r in real]
    op.multiplier = np.array([p[0] for p in pairs], np.int64)
    op.shift = np.array([p[1] for p in pairs], np.int64)
    clamp_bounds(op, fused)
