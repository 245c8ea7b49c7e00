"""TFLite import: int8 ``.tflite`` models as cnnforge networks, with TensorFlow Lite Micro's
reference-kernel arithmetic.

:func:`load_tflite` reads a model with the PyPI ``tflite`` package (the flatbuffer schema
bindings, no TensorFlow) and maps its operators, in the file's order, onto the layers of
:mod:`cnnforge.hw.frontend.network` (the float reference, weights dequantized) and onto the ops of
a :class:`TfliteQuantizedNetwork` built from the model's own scales and zero points (no
calibration). Tensors are NHWC in the file and NCHW in cnnforge.

The arithmetic is that of TensorFlow Lite Micro's reference kernels
(``tensorflow/lite/kernels/internal/reference/integer_ops/``: ``conv.h``,
``depthwise_conv.h``, ``fully_connected.h``, ``add.h``, ``pooling.h``; ``softmax.h``;
the parameters from ``tensorflow/lite/micro/kernels/*_common.cc`` and ``kernel_util.cc``):

* CONV_2D, DEPTHWISE_CONV_2D (depth multiplier 1), FULLY_CONNECTED: int32 accumulators with
  the input zero point, the model's int32 bias, requantized by ``MultiplyByQuantizedMultiplier``
  (gemmlowp's two roundings: :func:`cnnforge.sim.golden.requantize` with
  ``rounding="gemmlowp"``) with ``M = s_in·s_w[m]/s_out`` computed in double from the float32
  scales and split by ``QuantizeMultiplier`` (:func:`tflite_multiplier`);
* fused activations NONE, RELU, RELU6, RELU_N1_TO_1 as clamp bounds
  (``CalculateActivationRangeQuantized``);
* SAME padding as ``ComputePaddingHeightWidth``: the odd row or column at the bottom/right;
* AVERAGE_POOL_2D (no padding): the raw sum rounded to nearest, ties away from zero, as one
  requantization (:func:`cnnforge.sim.golden.mean_multiplier`);
* ADD: TFLite's int8 add (inputs shifted left by 20, rescaled, summed, requantized);
* MAX_POOL_2D (no padding), RESHAPE to a flat tensor (NHWC order: a FULLY_CONNECTED after it
  gets its weight columns permuted to cnnforge's C, H, W order);
* SOFTMAX as the model's last operator: computed on the host after the accelerator's int8
  logits (:func:`cnnforge.sim.softmax.softmax_int8`), because it is 12 or fewer values per
  inference against millions of MACs and its exp and reciprocal would cost more LUTs than the
  whole PE array of a small FPGA;
* QUANTIZE of a float32 model input and DEQUANTIZE of the model output.

Every problem raises :class:`~cnnforge.hw.frontend.network.NetworkError` with one line naming
the file, the operator index, its type and output tensor, and what is not supported.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tflite

from cnnforge.hw.frontend.network import (Add, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d,
                                          NetworkError, ReLU, ReLU6, Sequential)
from cnnforge.hw.frontend.quantize import (QMAX, QMIN, WMAX, QuantizedNetwork, QuantOp,
                                           set_add_params)
from cnnforge.sim.golden import mean_multiplier, tflite_quantize_multiplier
from cnnforge.sim.softmax import softmax_int8, softmax_params

__all__ = ["load_tflite", "TfliteQuantizedNetwork", "activation_range", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
                 "MAX_POOL_2D", "ADD", "RESHAPE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")
_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_TYPES = {tflite.TensorType.INT8: np.int8, tflite.TensorType.INT32: np.int32,
          tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.UINT8: np.uint8,
          tflite.TensorType.INT16: np.int16, tflite.TensorType.INT64: np.int64}
_ACT_NAMES = {v: k for k, v in vars(tflite.ActivationFunctionType).items()
              if not k.startswith("_")}
_OPTIONS = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
            "FULLY_CONNECTED": tflite.FullyConnectedOptions,
            "AVERAGE_POOL_2D": tflite.Pool2DOptions,
            "MAX_POOL_2D": tflite.Pool2DOptions, "ADD": tflite.AddOptions,
            "SOFTMAX": tflite.SoftmaxOptions}


def _round_away(value):
    """``TfLiteRound`` (``std::round``): to nearest, ties away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def activation_range(activation, scale, zero_point):
    """``CalculateActivationRangeQuantized`` for int8 (``tensorflow/lite/kernels/kernel_util.cc``):
    the clamp bounds of a fused activation (``"NONE"``, ``"RELU"``, ``"RELU6"``,
    ``"RELU_N1_TO_1"``), each bound ``z + round(f / s)`` with the division in float32."""
    def q(f):
        return zero_point + _round_away(float(np.float32(f) / np.float32(scale)))
    lo, hi = QMIN, QMAX
    if activation in ("RELU", "RELU6"):
        lo = max(QMIN, q(0.0))
    if activation == "RELU6":
        hi = min(QMAX, q(6.0))
    if activation == "RELU_N1_TO_1":
        lo, hi = max(QMIN, q(-1.0)), min(QMAX, q(1.0))
    return lo, hi


class TfliteQuantizedNetwork(QuantizedNetwork):
    """A :class:`~cnnforge.hw.frontend.quantize.QuantizedNetwork` imported from a TFLite model:
    its ops run on the accelerator; the model's boundary (input layout and dtype, a final
    SOFTMAX, a DEQUANTIZE) is applied on the host by :meth:`model_input` and
    :meth:`model_output`.

    Members
    -------
    model_input_shape : tuple
        The model's input shape without the batch axis, NHWC (e.g. (49, 10, 1)).
    input_dtype : numpy dtype
        ``int8``, or ``float32`` when the model starts with a QUANTIZE.
    softmax : (int, int, int) or None
        ``softmax_params`` of a final SOFTMAX (input multiplier, left shift, diff_min).
    model_output_scale, model_output_zero_point : float, int
        The model output's quantization (after the SOFTMAX: 1/256 and −128).
    dequantize : bool
        The model ends in a DEQUANTIZE (float32 output).
    op_tensors : list of (int, str)
        Per op, the index and name of the TFLite tensor it computes (a Flatten: its input's).
    """

    model_input_shape = ()
    input_dtype = np.dtype(np.int8)
    softmax = None
    model_output_scale = 1.0
    model_output_zero_point = 0
    dequantize = False
    op_tensors = ()

    def quantize_input(self, x):
        """float32 (B, C, H, W) -> int8 as TFLite's QUANTIZE (``AffineQuantize``): ``x / s``
        in float32, rounded half away from zero, plus the zero point, saturated."""
        v = np.asarray(x, np.float32) / np.float32(self.input_scale)
        q = np.sign(v) * np.floor(np.abs(v).astype(np.float64) + 0.5) + self.input_zero_point
        return np.clip(q, QMIN, QMAX).astype(np.int8)

    EXPECTS = "per input, the model expects {} (NHWC)"

    def input_nchw(self, x):
        """A batch of NHWC inputs (the model's layout) -> (B, C, H, W)."""
        return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x

    def float_input(self, x):
        """The float network's NCHW input: :meth:`model_input` dequantized (float inputs
        included, so the float reference sees what the accelerator sees)."""
        return self.dequantize_input(self.model_input(x))

    def model_layout(self, y):
        """An op's output (B, C, H, W) or (B, F) in TFLite's layout (NHWC)."""
        y = np.asarray(y)
        return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y

    def model_output(self, y):
        """The accelerator's last int8 output -> the model's output tensor exactly as
        TensorFlow Lite Micro produces it: NHWC, after the SOFTMAX (int8), dequantized if the
        model ends in a DEQUANTIZE (float32)."""
        y = self.model_layout(y)
        if self.softmax is not None:
            y = softmax_int8(y, *self.softmax)
        if self.dequantize:
            return ((y.astype(np.float32) - np.float32(self.model_output_zero_point))
                    * np.float32(self.model_output_scale))
        return y


class _Tensor:
    """One tensor of the file: shape (NHWC), dtype, quantization, constant data."""

    def __init__(self, model, graph, index):
        t = graph.Tensors(index)
        self.index = index
        self.name = (t.Name() or b"").decode(errors="replace")
        self.shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        self.type = t.Type()
        self.dtype = _TYPES.get(self.type)
        q = t.Quantization()
        self.scale = (q.ScaleAsNumpy().astype(np.float32) if q is not None and q.ScaleLength()
                      else None)
        self.zero_point = (q.ZeroPointAsNumpy().astype(np.int64)
                           if q is not None and q.ZeroPointLength() else None)
        self.axis = q.QuantizedDimension() if q is not None else 0
        buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        raw = buf.DataAsNumpy() if buf is not None and buf.DataLength() else None
        self.data = (None if raw is None or self.dtype is None
                     else np.frombuffer(raw.tobytes(), self.dtype).reshape(self.shape))

    @property
    def qparams(self):
        """(scale, zero point) of a per-tensor quantized tensor, as Python numbers (the float32
        scale exactly)."""
        return float(self.scale[0]), int(self.zero_point[0])


def _same_pads(size, kernel, stride):
    """TFLite SAME padding of one axis (``ComputePaddingHeightWidth``): output ⌈size/stride⌉,
    ``(before, after)`` with the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Importer:
    """One import: :meth:`build` walks the operators (one ``_op_<TYPE>`` method each), adding
    layers to the float network and ops to the quantized one."""

    def __init__(self, path, model):
        self.path = path
        self.model = model
        self.graph = model.Subgraphs(0)
        self.tensors = [_Tensor(model, self.graph, i) for i in range(self.graph.TensorsLength())]
        self.layers = []
        self.qops = []
        self.op_tensors = []    # the TFLite tensor each op produces
        self.at = {}            # tensor index -> (layer index, op index, (C, H, W) or (F,))
        self.nhwc_flat = {}     # flat tensor -> (C, H, W) it was flattened from in NHWC order
        self.index = -1
        self.opname = ""

    # -- errors

    def fail(self, what):
        out = self.graph.Operators(self.index).OutputsAsNumpy()
        name = self.tensors[out[0]].name if len(out) else ""
        return NetworkError(f"{self.path}: operator {self.index} ({self.opname}, output "
                            f"{name!r}): {what}")

    def fail_graph(self, what):
        return NetworkError(f"{self.path}: {what}")

    # -- tensors

    def source(self, tensor):
        if tensor in self.tail:
            raise self.fail(f"reads the output of a {self.tail[tensor][0]}, which is supported "
                            "only as one of the model's last operators")
        if tensor == self.input_tensor and tensor not in self.at:
            raise self.fail("reads the float32 model input: a QUANTIZE must come first")
        if tensor not in self.at:
            raise self.fail(f"input tensor {self.tensors[tensor].name!r} is not produced by "
                            "a supported operator before it")
        return self.at[tensor]

    def int8_tensor(self, tensor, what):
        t = self.tensors[tensor]
        if t.type != tflite.TensorType.INT8:
            raise self.fail(f"{what} {t.name!r} is {_type_name(t.type)}, not int8 (only "
                            "full-integer int8 models are supported)")
        if t.scale is None or t.zero_point is None or t.scale.size != 1:
            raise self.fail(f"{what} {t.name!r} needs one scale and zero point")
        return t

    def options(self, op):
        cls = _OPTIONS[self.opname]
        table = op.BuiltinOptions()
        opts = cls()
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
        return opts

    def activation(self, opts):
        name = _ACT_NAMES.get(opts.FusedActivationFunction(), "?")
        if name not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
            raise self.fail(f"fused activation {name} is not supported (NONE, RELU, RELU6, "
                            "RELU_N1_TO_1)")
        return name

    # -- building

    def add_layer(self, layer, sources):
        layer.sources = tuple(sources)
        self.layers.append(layer)
        return len(self.layers) - 1

    def add_op(self, op_kind, out_tensor, layers, in_tensors, shape_out, **fields):
        """Append a QuantOp of ``layers`` reading ``in_tensors`` and producing ``out_tensor``."""
        first = self.at[in_tensors[0]]
        out = self.int8_tensor(out_tensor, "output")
        s_out, z_out = out.qparams
        s_in, z_in = self.tensors[in_tensors[0]].qparams
        op = QuantOp(op_kind, name="+".join(str(self.layers.index(l)) for l in layers),
                     layers=layers, input_shape=first[2], output_shape=shape_out,
                     input_scale=s_in, input_zero_point=z_in, output_scale=s_out,
                     output_zero_point=z_out, inputs=[self.at[t][1] for t in in_tensors],
                     **fields)
        self.qops.append(op)
        self.op_tensors.append(out_tensor)
        self.at[out_tensor] = (self.layers.index(layers[-1]), len(self.qops) - 1, shape_out)
        return op

    def activation_layer(self, act, base):
        """The float network's layer for a fused activation (RELU_N1_TO_1 has none: its clamp
        lives in the quantized op only)."""
        layer = {"RELU": ReLU, "RELU6": ReLU6}.get(act)
        if layer is None:
            return []
        layer = layer()
        self.add_layer(layer, (base,))
        return [layer]

    def build(self):
        g = self.graph
        if g.InputsLength() != 1 or g.OutputsLength() != 1:
            raise self.fail_graph(f"the model has {g.InputsLength()} inputs and "
                                  f"{g.OutputsLength()} outputs; one of each is supported")
        self.input_tensor, self.output_tensor = int(g.Inputs(0)), int(g.Outputs(0))
        self.tail = {}               # host-side tensor -> (operator type, its input tensor)
        self.softmax = None
        model_in = self.tensors[self.input_tensor]
        if model_in.type == tflite.TensorType.INT8:
            self.int8_tensor(self.input_tensor, "model input")
            self.at[self.input_tensor] = (-1, -1, _nchw(model_in.shape))
        elif model_in.type != tflite.TensorType.FLOAT32:
            raise self.fail_graph(f"model input {model_in.name!r} is "
                                  f"{_type_name(model_in.type)}: int8 or float32 (with a "
                                  "QUANTIZE) inputs are supported")
        self.input_quantized = self.input_tensor
        for self.index in range(g.OperatorsLength()):
            op = g.Operators(self.index)
            self.opname = self.op_type(self.index)
            if self.opname not in SUPPORTED_OPS:
                raise self.fail(f"operator {self.opname} is not supported (supported: "
                                f"{', '.join(SUPPORTED_OPS)})")
            ins = [int(i) for i in op.InputsAsNumpy()]
            outs = [int(o) for o in op.OutputsAsNumpy()]
            getattr(self, f"_op_{self.opname}")(op, ins, outs)
        if not self.qops:
            raise self.fail_graph("the model has no operator the accelerator runs")
        return self.finish()

    # -- operators

    def _op_QUANTIZE(self, op, ins, outs):
        if ins[0] != self.input_tensor or self.tensors[ins[0]].type != tflite.TensorType.FLOAT32:
            raise self.fail("QUANTIZE is supported only on the model's float32 input")
        t = self.int8_tensor(outs[0], "output")
        self.input_quantized = outs[0]
        self.at[outs[0]] = (-1, -1, _nchw(t.shape))

    def _op_DEQUANTIZE(self, op, ins, outs):
        if outs[0] != self.output_tensor:
            raise self.fail("DEQUANTIZE is supported only on the model's output")
        self.int8_tensor(ins[0], "input")
        self.tail[outs[0]] = ("DEQUANTIZE", ins[0])

    def _op_SOFTMAX(self, op, ins, outs):
        t_in = self.int8_tensor(ins[0], "input")
        t_out = self.int8_tensor(outs[0], "output")
        if len(t_in.shape) != 2:
            raise self.fail(f"SOFTMAX of a tensor of shape {list(t_in.shape)}: only (1, N) "
                            "logits are supported")
        if t_out.qparams != (1 / 256, -128):
            raise self.fail(f"output quantization {t_out.qparams} must be scale 1/256, zero "
                            "point -128 (TFLite's int8 softmax)")
        self.softmax = softmax_params(t_in.qparams[0], self.options(op).Beta())
        self.tail[outs[0]] = ("SOFTMAX", ins[0])

    def _window(self, opts, size, kernel):
        """Stride and (top, left, bottom, right) padding of a conv or pool on an (H, W) input."""
        stride = (opts.StrideH(), opts.StrideW())
        if opts.Padding() == tflite.Padding.SAME:
            (top, bottom), (left, right) = (_same_pads(size[i], kernel[i], stride[i])
                                            for i in range(2))
            return stride, (top, left, bottom, right)
        if opts.Padding() != tflite.Padding.VALID:
            raise self.fail(f"padding {opts.Padding()} is not supported (SAME, VALID)")
        return stride, (0, 0, 0, 0)

    def _conv(self, op, ins, outs, depthwise):
        opts = self.options(op)
        if (opts.DilationHFactor(), opts.DilationWFactor()) != (1, 1):
            raise self.fail(f"dilation {(opts.DilationHFactor(), opts.DilationWFactor())} is not "
                            "supported (only 1)")
        base, _, (c, h, w) = self.source(ins[0])
        wt = self.weights(ins[1])
        if depthwise:
            if opts.DepthMultiplier() != 1 or wt.shape[3] != c:
                raise self.fail(f"depth_multiplier {opts.DepthMultiplier()} (input {c} "
                                f"channels, filter {list(wt.shape)}) is not supported (only 1)")
            q = wt.data.transpose(3, 0, 1, 2)                 # [1, kh, kw, C] -> (C, 1, kh, kw)
        else:
            if wt.shape[3] != c:
                raise self.fail(f"filter {list(wt.shape)} does not match its input's {c} "
                                "channels (grouped convolution is not supported)")
            q = wt.data.transpose(0, 3, 1, 2)                 # [O, kh, kw, I] -> (O, I, kh, kw)
        m, kh, kw = q.shape[0], q.shape[2], q.shape[3]
        stride, padding = self._window(opts, (h, w), (kh, kw))
        act = self.activation(opts)
        conv = Conv2d(c, m, (kh, kw), stride, padding, groups=c if depthwise and c > 1 else 1,
                      bias=len(ins) > 2 and ins[2] >= 0)
        self.add_layer(conv, (base,))
        layers = [conv] + self.activation_layer(act, len(self.layers) - 1)
        shape = conv.output_shape((c, h, w))
        if shape != _nchw(self.tensors[outs[0]].shape):
            raise self.fail(f"output shape {list(self.tensors[outs[0]].shape)} is not what the "
                            f"padding gives ({shape}, C, H, W)")
        qop = self.add_op("conv", outs[0], layers, ins[:1], shape, kernel_size=(kh, kw),
                          stride=stride, padding=conv.padding, groups=conv.groups)
        self.gemm(qop, conv, q, wt, ins, act)

    def _op_CONV_2D(self, op, ins, outs):
        self._conv(op, ins, outs, depthwise=False)

    def _op_DEPTHWISE_CONV_2D(self, op, ins, outs):
        self._conv(op, ins, outs, depthwise=True)

    def _op_FULLY_CONNECTED(self, op, ins, outs):
        opts = self.options(op)
        if opts.KeepNumDims() or opts.WeightsFormat() != 0:
            raise self.fail("keep_num_dims and shuffled weights are not supported")
        base, _, shape = self.source(ins[0])
        wt = self.weights(ins[1])
        q = wt.data
        if len(shape) == 3:                  # an implicit flatten of a (C, H, W) map
            base = self.flatten(ins[0], base, shape)
            self.nhwc_flat[ins[0]] = shape
            shape = (int(np.prod(shape)),)
        if q.shape[1] != shape[0]:
            raise self.fail(f"weights {list(q.shape)} do not match its {shape[0]} inputs")
        if ins[0] in self.nhwc_flat:         # NHWC flatten order -> C, H, W order
            c, h, w = self.nhwc_flat[ins[0]]
            q = q.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(q.shape[0], -1)
        act = self.activation(opts)
        fc = Linear(q.shape[1], q.shape[0], bias=len(ins) > 2 and ins[2] >= 0)
        self.add_layer(fc, (base,))
        layers = [fc] + self.activation_layer(act, len(self.layers) - 1)
        qop = self.add_op("linear", outs[0], layers, ins[:1], (q.shape[0],))
        self.gemm(qop, fc, q, wt, ins, act)

    def flatten(self, tensor, base, shape):
        """A Flatten layer and op for ``tensor`` (a (C, H, W) map; its quantization kept)."""
        layer = Flatten()
        index = self.add_layer(layer, (base,))
        flat = (int(np.prod(shape)),)
        s, z = self.tensors[tensor].qparams
        self.qops.append(QuantOp("flatten", name=str(index), layers=[layer], input_shape=shape,
                                 output_shape=flat, input_scale=s, input_zero_point=z,
                                 output_scale=s, output_zero_point=z,
                                 inputs=[self.at[tensor][1]]))
        self.op_tensors.append(tensor)          # the same values, flattened
        return index

    def _op_RESHAPE(self, op, ins, outs):
        base, _, shape = self.source(ins[0])
        out = self.int8_tensor(outs[0], "output")
        new = _nchw(out.shape)
        if new == shape:
            self.at[outs[0]] = self.at[ins[0]]
            return
        if len(shape) != 3 or len(new) != 1 or new[0] != int(np.prod(shape)):
            raise self.fail(f"reshape {list(self.tensors[ins[0]].shape)} -> {list(out.shape)} "
                            "is not supported (only flattening an N, H, W, C map to (N, F))")
        if out.qparams != self.tensors[ins[0]].qparams:
            raise self.fail("input and output quantization differ")
        index = self.flatten(ins[0], base, shape)
        self.at[outs[0]] = (index, len(self.qops) - 1, new)
        if shape[1] * shape[2] > 1:
            readers = [i for i in range(self.graph.OperatorsLength())
                       if outs[0] in self.graph.Operators(i).InputsAsNumpy()]
            if len(readers) != 1 or self.op_type(readers[0]) != "FULLY_CONNECTED":
                raise self.fail("flattening a map with H x W > 1 is supported only in front of "
                                "a FULLY_CONNECTED (NHWC order decides its weight order)")
            self.nhwc_flat[outs[0]] = shape

    def op_type(self, index):
        """The BuiltinOperator name of operator ``index`` (``CUSTOM`` for a custom one)."""
        code = self.model.OperatorCodes(self.graph.Operators(index).OpcodeIndex())
        return _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")

    def _pool(self, op, ins, outs, kind):
        opts = self.options(op)
        base, _, (c, h, w) = self.source(ins[0])
        kernel = (opts.FilterHeight(), opts.FilterWidth())
        stride, padding = self._window(opts, (h, w), kernel)
        if any(padding):
            raise self.fail(f"padding {padding} (top, left, bottom, right) is not supported: "
                            "pooling windows must lie inside the map")
        act = self.activation(opts)
        layer = (AvgPool2d if kind == "avg" else MaxPool2d)(kernel, stride)
        self.add_layer(layer, (base,))
        shape = layer.output_shape((c, h, w))
        out = self.int8_tensor(outs[0], "output")
        lo, hi = activation_range(act, *out.qparams)
        if kind == "max":
            self.add_op("maxpool", outs[0], [layer], ins[:1], shape, kernel_size=kernel,
                        stride=stride, act_min=lo, act_max=hi)
            return
        count = kernel[0] * kernel[1]
        qop = self.add_op("conv", outs[0], [layer], ins[:1], shape, kernel_size=kernel,
                          stride=stride, groups=c, act_min=lo, act_max=hi, output_offset=0,
                          weight=np.ones((c, 1, *kernel), np.int8),
                          weight_scale=np.full(c, 1.0 / count))
        # the raw sum (zero point included): bias_raw = z_in·count cancels the folded −z_in·Σw
        qop.bias_raw = np.full(c, qop.input_zero_point * count, np.int32)
        qop.bias = np.zeros(c, np.int32)
        qop.multiplier = np.full(c, mean_multiplier(count), np.int64)
        qop.shift = np.zeros(c, np.int64)

    def _op_AVERAGE_POOL_2D(self, op, ins, outs):
        self._pool(op, ins, outs, "avg")

    def _op_MAX_POOL_2D(self, op, ins, outs):
        self._pool(op, ins, outs, "max")

    def _op_ADD(self, op, ins, outs):
        (a, _, sa), (b, _, sb) = self.source(ins[0]), self.source(ins[1])
        if sa != sb:
            raise self.fail(f"input shapes {sa} and {sb} differ (broadcasting is not supported)")
        act = self.activation(self.options(op))
        layer = Add(a, b)
        self.add_layer(layer, (a, b))
        layers = [layer] + self.activation_layer(act, len(self.layers) - 1)
        s2, z2 = self.int8_tensor(ins[1], "input").qparams
        qop = self.add_op("add", outs[0], layers, ins[:2], sa, input2_scale=s2,
                          input2_zero_point=z2)
        twice_max = 2 * max(qop.input_scale, s2)
        real = twice_max / ((1 << 20) * qop.output_scale)
        if real >= 1:
            raise self.fail(f"output scale {qop.output_scale:.6g} is below 2^-19 of its inputs' "
                            "scale: not supported by the int8 add")
        set_add_params(qop, real)
        qop.act_min, qop.act_max = activation_range(act, qop.output_scale,
                                                    qop.output_zero_point)

    # -- weights and requantization

    def weights(self, tensor):
        t = self.tensors[tensor]
        if t.data is None:
            raise self.fail(f"weights {t.name!r} are not a constant tensor")
        if t.type != tflite.TensorType.INT8 or t.scale is None:
            raise self.fail(f"weights {t.name!r} are {_type_name(t.type)}: int8 weights only")
        if t.zero_point is not None and np.any(t.zero_point != 0):
            raise self.fail(f"weights {t.name!r} have a zero point other than 0 (symmetric "
                            "weights only)")
        if t.data.min() < -WMAX:
            raise self.fail(f"weights {t.name!r} hold -128: symmetric int8 weights lie in "
                            f"[-{WMAX}, {WMAX}]")
        return t

    def gemm(self, qop, layer, q, wt, ins, act):
        """Weights, bias, multipliers and clamp of a conv or linear op from the model's int8
        weights (cnnforge layout ``q``) and int32 bias, as TFLite Micro's
        ``PopulateConvolutionQuantizationParams``."""
        m = q.shape[0]
        s_in, z_in, s_out = qop.input_scale, qop.input_zero_point, qop.output_scale
        scale = wt.scale.astype(np.float64)
        if scale.size == 1:
            scale = np.full(m, scale[0])
        elif scale.size != m:
            raise self.fail(f"weights {wt.name!r} have {scale.size} scales for {m} output "
                            "channels")
        qop.weight, qop.weight_scale = np.ascontiguousarray(q).astype(np.int8), scale
        bias = np.zeros(m, np.int64)
        if len(ins) > 2 and ins[2] >= 0:
            b = self.tensors[ins[2]]
            if b.data is None or b.type != tflite.TensorType.INT32 or b.data.size != m:
                raise self.fail(f"bias {b.name!r} must be a constant int32 tensor of {m} values")
            bias = b.data.reshape(-1).astype(np.int64)
        qop.bias_raw = bias.astype(np.int32)
        folded = bias - z_in * q.reshape(m, -1).astype(np.int64).sum(axis=1)
        if (np.abs(folded) + q[0].size * 128 * WMAX).max() >= 1 << 31:
            raise self.fail("accumulator could overflow int32 (bias too large for its scale)")
        qop.bias = folded.astype(np.int32)
        pairs = [tflite_quantize_multiplier(s_in * float(sw) / s_out) for sw in scale]
        if max(shift for _, shift in pairs) > 0:
            k = int(np.argmax([shift for _, shift in pairs]))
            raise self.fail(f"requantization multiplier input scale x weight scale / output "
                            f"scale = {s_in * scale[k] / s_out:.6g} (output channel {k}) is >= 1: "
                            "not supported (the requantizer shifts right only)")
        qop.multiplier = np.array([m0 for m0, _ in pairs], np.int64)
        qop.shift = np.array([-shift for _, shift in pairs], np.int64)
        qop.act_min, qop.act_max = activation_range(act, s_out, qop.output_zero_point)
        layer.weight = (q * scale.reshape((-1,) + (1,) * (q.ndim - 1))).astype(np.float32)
        if layer.has_bias:
            layer.bias = (bias * s_in * scale).astype(np.float32)

    # -- the network

    def finish(self):
        """The float Sequential with its TfliteQuantizedNetwork, after checking that the model's
        output is the last accelerator op's, through at most a SOFTMAX and a DEQUANTIZE."""
        tensor, tail = self.output_tensor, []
        while tensor in self.tail:
            kind, tensor = self.tail[tensor]
            tail.append(kind)
        if tail not in ([], ["SOFTMAX"], ["DEQUANTIZE"], ["DEQUANTIZE", "SOFTMAX"]):
            raise self.fail_graph(f"the model ends in {' after '.join(tail)}: a SOFTMAX and a "
                                  "DEQUANTIZE are supported only as its last operators")
        if tensor not in self.at or self.at[tensor][1] != len(self.qops) - 1:
            raise self.fail_graph("the model's output is not the last accelerator operator's "
                                  "output")
        model_in = self.tensors[self.input_quantized]
        input_shape = _nchw(model_in.shape)
        network = Sequential(*self.layers, input_shape=input_shape)
        s_in, z_in = model_in.qparams
        qnet = TfliteQuantizedNetwork(network, ops=self.qops, input_scale=s_in,
                                      input_zero_point=z_in)
        qnet.model_input_shape = self.tensors[self.input_tensor].shape[1:]
        qnet.input_dtype = np.dtype(_TYPES[self.tensors[self.input_tensor].type])
        qnet.softmax = self.softmax
        # the quantization of the model's int8 output (a DEQUANTIZE's input)
        final = (self.tail[self.output_tensor][1] if tail[:1] == ["DEQUANTIZE"]
                 else self.output_tensor)
        qnet.model_output_scale, qnet.model_output_zero_point = self.tensors[final].qparams
        qnet.dequantize = "DEQUANTIZE" in tail
        qnet.op_tensors = [(i, self.tensors[i].name) for i in self.op_tensors]
        network.quantized = qnet
        return network


def _nchw(shape):
    """A TFLite tensor shape (NHWC, batch first) -> cnnforge's per-input shape."""
    shape = tuple(shape)[1:]
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    return (int(np.prod(shape)),) if shape else (1,)


def _type_name(code):
    return next((k for k, v in vars(tflite.TensorType).items() if v == code), str(code))


def load_tflite(path):
    """Import an int8 TFLite model as a :class:`~cnnforge.hw.frontend.network.Sequential`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.tflite`` file: one subgraph, one input (int8 NHWC, or float32 into a QUANTIZE),
        one output; batch 1.

    Returns
    -------
    Sequential
        The float network (dequantized weights, NCHW), with ``source`` (``path``) and
        ``quantized``, a :class:`TfliteQuantizedNetwork` (what
        :func:`~cnnforge.hw.frontend.quantize.quantize` returns for this network).

    Raises
    ------
    NetworkError
        One line naming the file (and the operator index, type and output tensor): a missing
        or unreadable file, an unsupported operator, option, tensor type or quantization.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NetworkError(f"{path}: no such TFLite file")
    with open(path, "rb") as f:
        buf = f.read()
    try:
        if len(buf) < 8 or buf[4:8] != b"TFL3":
            raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
        model = tflite.Model.GetRootAs(buf, 0)
        if model.SubgraphsLength() != 1:
            raise ValueError(f"{model.SubgraphsLength()} subgraphs; one is supported")
    except Exception as exc:  # a truncated or foreign file makes the flatbuffer reader raise
        raise NetworkError(f"{path}: cannot read the TFLite model ({exc})") from None
    return _Importer(path, model).build()
