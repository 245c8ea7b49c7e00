"""ONNX import: float models and ONNX Runtime QDQ models as cnnforge networks.

:func:`load_onnx` reads an ``.onnx`` file with the ``onnx`` package and maps its graph onto the
layers of :mod:`cnnforge.hw.frontend.network`, in topological order, with ``sources`` for branches (the
ONNX tensor names become layer indices). Two kinds of model are accepted:

* **float models** (e.g. from ``torch.onnx.export``): the returned :class:`Sequential` holds the
  float weights; :func:`cnnforge.hw.frontend.quantize.quantize` then quantizes it with calibration data,
  as for a network written in Python;
* **QDQ models** from ``onnxruntime.quantization.quantize_static(quant_format=QDQ)`` (int8
  activations, int8 weights per channel or per tensor, int32 biases), recognised by their
  ``QuantizeLinear``/``DequantizeLinear`` nodes: the network holds the *dequantized* weights (so
  ``network.forward`` is the float reference) and ``network.quantized`` the
  :class:`~cnnforge.hw.frontend.quantize.QuantizedNetwork` built from the model's own scales and zero
  points, with no calibration, requantizing with one rounding, ties to even, as ONNX Runtime
  does; ``quantize(network)`` returns it.

Sources: the ONNX operator specification (https://onnx.ai/onnx/operators/: Conv, Gemm,
MatMul, Relu, Clip (min/max attributes before opset 11, inputs from 11), MaxPool, AveragePool,
GlobalAveragePool, Add, Flatten, Reshape, QuantizeLinear, DequantizeLinear, Identity, Dropout,
Constant) and ONNX Runtime's QDQ
format (``onnxruntime/python/tools/quantization``: ``qdq_quantizer.py``, ``base_quantizer.py``;
the bias of Conv and Gemm is int32 with scale ``s_in·s_w`` and zero point 0, and the Relu/Clip
after a Conv is usually removed, its range folded into the Conv's output QuantizeLinear).
``docs/onnx.md`` lists what is supported and how the scales map onto cnnforge's arithmetic.

Every problem raises :class:`~cnnforge.hw.frontend.network.NetworkError` with a one-line message naming
the file, the node and its op type, e.g. ``model.onnx: node 'conv1' (Conv): attribute
dilations=[2, 2] is not supported (only 1)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from cnnforge.hw.frontend.network import (Add, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d,
                      NetworkError, ReLU, ReLU6, Sequential)
from cnnforge.hw.frontend.quantize import (QMAX, QMIN, WMAX, QuantizedNetwork, QuantOp, clamp_bounds,
                       fused_activations, quantize_multiplier, set_add_params)

__all__ = ["load_onnx", "OnnxQuantizedNetwork", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Add", "Flatten", "Reshape", "QuantizeLinear",
                 "DequantizeLinear", "Identity", "Dropout", "Constant")
_ACTIVATIONS = ("Relu", "Clip")
_BIAS_SCALE_RTOL = 1e-5               # float32 product s_in·s_w: 2^-24 per rounding


class OnnxQuantizedNetwork(QuantizedNetwork):
    """A :class:`~cnnforge.hw.frontend.quantize.QuantizedNetwork` imported from a QDQ model.

    The only difference is :meth:`quantize_input`, which follows ONNX ``QuantizeLinear``
    exactly, so that the int8 input equals ONNX Runtime's bit for bit."""

    def quantize_input(self, x):
        """float (B, C, H, W) -> int8 as ONNX ``QuantizeLinear``: ``x / scale`` in float32,
        rounded half to even, plus the zero point, saturated to [−128, 127]."""
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.input_scale))
        q = q.astype(np.float64) + self.input_zero_point
        return np.clip(q, QMIN, QMAX).astype(np.int8)


@dataclass
class _QConst:
    """A quantized constant (the input of a DequantizeLinear): integer values, scale, zero
    point and axis as in the file, and the DequantizeLinear node."""
    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    node: object


@dataclass
class _Node:
    """A compute node of the cleaned graph: Q/DQ pairs, Identity and Dropout removed, inputs
    renamed to the float tensors they stand for."""
    op: str
    name: str
    inputs: list
    outputs: list
    attrs: dict
    proto: object
    absorbed: bool = False          # an Add folded into the MatMul before it as its bias


def _fmt(value):
    """An attribute value as error messages show it: ``[2, 2]``, ``'SAME_UPPER'``, ``-1.0``."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


class _Importer:
    """One import: :meth:`clean` removes the Q/DQ pairs (recording each tensor's scale and zero
    point) and folds constants; :meth:`build` maps the remaining nodes onto layers (one
    ``_op_<OpType>`` method each) and, for a QDQ model, builds the quantized network
    (:meth:`_quantize`)."""

    def __init__(self, path, model):
        import onnx
        from onnx import numpy_helper
        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.path = path
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          1)
        self.consts = {}          # tensor name -> float or integer ndarray
        self.qconsts = {}         # dequantized constant name -> _QConst
        self.alias = {}           # DQ output / Identity output -> the tensor it stands for
        self.qout = {}            # QuantizeLinear output -> (tensor, scale, zero point, node)
        self.qparams = {}         # float tensor name -> (scale, zero point): a Q/DQ pair on it
        self.nodes = []           # _Node list (the cleaned graph)

    # -- errors

    def fail(self, node, what):
        return NetworkError(f"{self.path}: node {node.name!r} ({node.op}): {what}")

    def bad_attr(self, node, attr, value, why):
        return self.fail(node, f"attribute {attr}={_fmt(value)} is not supported ({why})")

    def fail_graph(self, what):
        return NetworkError(f"{self.path}: {what}")

    # -- step 1: the cleaned graph

    def resolve(self, name):
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, node, name, what):
        name = self.resolve(name)
        if name not in self.consts:
            raise self.fail(node, f"{what} {name!r} must be a constant (an initializer)")
        return self.consts[name]

    def clean(self):
        g = self.graph
        for init in g.initializer:
            self.consts[init.name] = self.numpy_helper.to_array(init)
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise self.fail_graph(f"the graph has {len(inputs)} inputs "
                                  f"({', '.join(repr(i.name) for i in inputs)}); a cnnforge "
                                  "network takes exactly one")
        if len(g.output) != 1:
            raise self.fail_graph(f"the graph has {len(g.output)} outputs "
                                  f"({', '.join(repr(o.name) for o in g.output)}); a cnnforge "
                                  "network has exactly one")
        self.input = inputs[0]
        self.input_shape = self._input_shape(self.input)
        known = {self.input.name} | set(self.consts)
        for index, proto in enumerate(g.node):
            node = _Node(proto.op_type, proto.name or f"#{index}", list(proto.input),
                         list(proto.output), {a.name: self.onnx.helper.get_attribute_value(a)
                                              for a in proto.attribute}, proto)
            if proto.domain not in ("", "ai.onnx") or node.op not in SUPPORTED_OPS:
                op = node.op if proto.domain in ("", "ai.onnx") else f"{proto.domain}.{node.op}"
                raise self.fail(node, f"op type {op} is not supported (supported: "
                                f"{', '.join(SUPPORTED_OPS)})")
            for name in node.inputs:
                if name and name not in known:
                    raise self.fail(node, f"input {name!r} is not produced by an earlier node "
                                    "(the graph must be topologically sorted)")
            known.update(node.outputs)
            self._clean_node(node)

    def _input_shape(self, value):
        t = value.type.tensor_type
        if t.elem_type != self.onnx.TensorProto.FLOAT:
            raise self.fail_graph(f"graph input {value.name!r} has element type "
                                  f"{self.onnx.TensorProto.DataType.Name(t.elem_type)}; only "
                                  "float32 inputs are supported")
        dims = list(t.shape.dim)
        if len(dims) != 4 or any(not d.HasField("dim_value") or d.dim_value < 1
                                 for d in dims[1:]):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in dims]
            raise self.fail_graph(f"graph input {value.name!r} has shape {shape}; cnnforge "
                                  "needs (N, C, H, W) with fixed C, H and W")
        self.batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
        return tuple(int(d.dim_value) for d in dims[1:])

    def _clean_node(self, node):
        op, a = node.op, node.attrs
        if op == "Constant":
            value = None
            if "value" in a:
                value = self.numpy_helper.to_array(a["value"])
            elif "value_float" in a or "value_int" in a:
                value = np.array(a.get("value_float", a.get("value_int")))
            elif "value_floats" in a or "value_ints" in a:
                value = np.array(a.get("value_floats", a.get("value_ints")))
            if value is None:
                raise self.fail(node, f"attribute {', '.join(a) or '(none)'} is not supported "
                                "(only value, value_float(s) or value_int(s))")
            self.consts[node.outputs[0]] = value
            return
        if op in ("Identity", "Dropout"):
            src = self.resolve(node.inputs[0])
            if src in self.consts:
                self.consts[node.outputs[0]] = self.consts[src]
                if src in self.qconsts:
                    self.qconsts[node.outputs[0]] = self.qconsts[src]
            else:
                self.alias[node.outputs[0]] = src
            return
        if op == "QuantizeLinear":
            self._clean_quantize(node)
            return
        if op == "DequantizeLinear":
            self._clean_dequantize(node)
            return
        node.inputs = [self.resolve(n) if n else "" for n in node.inputs]
        self.nodes.append(node)

    def _q_args(self, node):
        """(scale float32 array, zero point array, axis) of a QuantizeLinear/DequantizeLinear."""
        a = node.attrs
        if a.get("block_size", 0):
            raise self.bad_attr(node, "block_size", a["block_size"], "only per-tensor and "
                                "per-axis quantization")
        scale = np.asarray(self.const(node, node.inputs[1], "scale"))
        if len(node.inputs) > 2 and node.inputs[2]:
            zp = np.asarray(self.const(node, node.inputs[2], "zero point"))
        elif node.op == "QuantizeLinear":       # the spec's default output type: uint8
            zp = np.zeros(scale.shape, {3: np.int8}.get(a.get("output_dtype", 0), np.uint8))
        else:                                   # DequantizeLinear: the input's type
            src = self.consts.get(self.resolve(node.inputs[0]))
            zp = np.zeros(scale.shape, np.int8 if src is None else np.asarray(src).dtype)
        return scale.astype(np.float32), zp, int(a.get("axis", 1))

    def _clean_quantize(self, node):
        scale, zp, axis = self._q_args(node)
        src = self.resolve(node.inputs[0])
        if src in self.consts:              # a float weight quantized in the graph: fold it
            x = np.asarray(self.consts[src], np.float32)
            s, z = _along(scale, axis, x.ndim), _along(zp, axis, x.ndim)
            info = np.iinfo(zp.dtype)
            q = np.clip(np.rint(x / s) + z.astype(np.float64), info.min, info.max)
            self.consts[node.outputs[0]] = q.astype(zp.dtype)
            return
        if scale.size != 1:
            raise self.bad_attr(node, "axis", axis, "activations are quantized per tensor only")
        if zp.dtype != np.int8:
            raise self.fail(node, f"activation type {zp.dtype} is not supported (int8 "
                            "activations only: quantize_static(activation_type=QuantType.QInt8))")
        s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
        if not (s > 0 and math.isfinite(s)):
            raise self.fail(node, f"scale {s} must be positive and finite")
        old = self.qparams.get(src)
        if old is not None and old != (s, z):
            raise self.fail(node, f"tensor {src!r} is quantized twice with different "
                            f"parameters ({old} and {(s, z)})")
        self.qparams[src] = (s, z)
        self.qout[node.outputs[0]] = (src, s, z, node)
        self.alias[node.outputs[0]] = src           # an int8 graph output stands for src

    def _clean_dequantize(self, node):
        raw = node.inputs[0]
        src = raw if raw in self.qout else self.resolve(raw)
        scale, zp, axis = self._q_args(node)
        if raw in self.qout:
            tensor, s, z, qnode = self.qout[raw]
            if scale.size != 1 or (float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])) != (s, z):
                raise self.fail(node, f"scale/zero point differ from those of its "
                                f"QuantizeLinear {qnode.name!r} (a Q/DQ pair must share them)")
            self.alias[node.outputs[0]] = tensor
            return
        if src not in self.consts:
            raise self.fail(node, f"input {src!r} is neither a constant nor the output of a "
                            "QuantizeLinear")
        q = np.asarray(self.consts[src])
        if not np.issubdtype(q.dtype, np.integer):
            raise self.fail(node, f"input {src!r} has type {q.dtype}, expected an integer type")
        s, z = _along(scale, axis, q.ndim), _along(zp, axis, q.ndim)
        value = ((q.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s).astype(
            np.float32)
        self.consts[node.outputs[0]] = value
        self.qconsts[node.outputs[0]] = _QConst(q, scale, zp, axis if q.ndim else 0, node)

    # -- step 2: layers

    def live_nodes(self):
        """The nodes the graph output depends on, each Relu/Clip that is the only reader of a
        node's output moved right after that node (activations fuse into the op before them)."""
        out = self.resolve(self.graph.output[0].name)
        producer = {o: n for n in self.nodes for o in n.outputs}
        if out not in producer:
            raise self.fail_graph(f"graph output {self.graph.output[0].name!r} is not computed "
                                  "by any supported node")
        live, stack = set(), [out]
        while stack:
            name = stack.pop()
            n = producer.get(name)
            if n is not None and id(n) not in live:
                live.add(id(n))
                stack.extend(i for i in n.inputs if i)
        nodes = [n for n in self.nodes if id(n) in live]
        readers = {}
        for n in nodes:
            for i in n.inputs:
                if i:
                    readers.setdefault(i, []).append(n)
        self.readers = readers
        order, done = [], set()

        def emit(n):
            order.append(n)
            done.add(id(n))
            nxt = readers.get(n.outputs[0], [])
            if len(nxt) == 1 and nxt[0].op in _ACTIVATIONS and id(nxt[0]) not in done:
                emit(nxt[0])
        for n in nodes:
            if id(n) not in done:
                emit(n)
        self.output_tensor = out
        return order

    def build(self):
        self.clean()
        self.qdq = bool(self.qout) or bool(self.qconsts)
        self.layers, self.out_shapes, self.layer_tensor, self.layer_node = [], [], [], []
        self.tensor_layer = {self.input.name: -1}
        self.state, self.qinfo = {}, {}
        nodes = self.live_nodes()
        for node in nodes:
            if not node.absorbed:
                getattr(self, "_op_" + node.op)(node)
        if self.tensor_layer.get(self.output_tensor) != len(self.layers) - 1:
            raise self.fail_graph(f"graph output {self.graph.output[0].name!r} is not the "
                                  "last layer's output")
        try:
            network = Sequential(*self.layers, input_shape=self.input_shape)
            network.load_state_dict(self.state, source=self.path)
        except NetworkError as exc:
            raise self.fail_graph(str(exc)) from None
        network.onnx_nodes = [n.name for n in self.layer_node]
        network.onnx_tensors = list(self.layer_tensor)
        network.source = self.path
        network.quantized = self._quantize(network) if self.qdq else None
        return network

    def shape_of(self, tensor):
        index = self.tensor_layer[tensor]
        return self.input_shape if index < 0 else self.out_shapes[index]

    def source(self, node, tensor):
        if tensor in self.consts:
            raise self.fail(node, f"input {tensor!r} is a constant; cnnforge layers read "
                            "activations (a constant operand is only supported as weight or "
                            "bias)")
        return self.tensor_layer[tensor]

    def add_layer(self, node, layer, sources, tensor, state=None):
        index = len(self.layers)
        layer.index = index
        layer.sources = tuple(sources)
        try:
            layer.check()
            shapes = [self.input_shape if s < 0 else self.out_shapes[s] for s in sources]
            out = layer.output_shape(*shapes)
        except NetworkError as exc:
            raise self.fail(node, str(exc)) from None
        self.layers.append(layer)
        self.out_shapes.append(out)
        self.layer_tensor.append(tensor)
        self.layer_node.append(node)
        self.tensor_layer[tensor] = index
        for key, value in (state or {}).items():
            if value is not None:
                self.state[f"{index}.{key}"] = np.asarray(value, np.float32)
        return index

    def _maybe_removed_activation(self, node, tensor):
        """QDQ models: ONNX Runtime removes a Relu/Clip that is the only reader of a Conv's
        (Gemm's, Add's) output and quantizes the output with the activation's range instead,
        so the saturation of the QuantizeLinear is the activation. When that range starts at 0
        (zero point −128), put the activation back into the float network: ReLU6 if the range
        ends at 6 (the calibration saturated a ReLU6), else ReLU. Only the float reference
        depends on that guess (above the range's end); the int8 op is the same either way."""
        if not self.qdq or tensor not in self.qparams:
            return
        nxt = self.readers.get(tensor, [])
        if len(nxt) == 1 and nxt[0].op in _ACTIVATIONS:
            return
        s, z = self.qparams[tensor]
        if z != QMIN:
            return
        act = ReLU6() if abs(s * (QMAX - QMIN) - 6.0) <= 6e-6 else ReLU()
        self.add_layer(node, act, (self.tensor_layer[tensor],), tensor)

    def _weights(self, node, name, what):
        value = self.const(node, name, what)
        return np.asarray(value, np.float32), self.qconsts.get(self.resolve(name))

    # each _op_<OpType> maps one node onto layers

    def _op_Conv(self, node):
        a = node.attrs
        x = node.inputs[0]
        w, wq = self._weights(node, node.inputs[1], "weight")
        if w.ndim != 4:
            raise self.fail(node, f"weight has shape {list(w.shape)}; only 2-D convolution "
                            "(a 4-D weight) is supported")
        b, bq = (None, None)
        if len(node.inputs) > 2 and node.inputs[2]:
            b, bq = self._weights(node, node.inputs[2], "bias")
        pads, stride = self._window_attrs(node, w.shape[2:], strides_default=1)
        group = int(a.get("group", 1))
        if group < 1:
            raise self.bad_attr(node, "group", group, "must be >= 1")
        layer = Conv2d(w.shape[1] * group, w.shape[0], tuple(w.shape[2:]), stride, pads,
                       groups=group, bias=b is not None)
        if b is not None:
            b = b.reshape(-1)
        index = self.add_layer(node, layer, (self.source(node, x),), node.outputs[0],
                               {"weight": w, "bias": b})
        self.qinfo[index] = dict(node=node, weight=wq, bias=bq, bias_float=b, axis=0,
                                 transpose=False)
        self._maybe_removed_activation(node, node.outputs[0])

    def _window_attrs(self, node, kernel, strides_default):
        """Check Conv/MaxPool/AveragePool attributes; returns (padding, stride) pairs."""
        a = node.attrs
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            raise self.bad_attr(node, "auto_pad", auto_pad, "only NOTSET or VALID; give explicit "
                                "pads")
        if len(kernel) != 2:
            raise self.bad_attr(node, "kernel_shape", list(kernel), "only 2-D windows")
        if "kernel_shape" in a and list(a["kernel_shape"]) != [int(k) for k in kernel]:
            raise self.bad_attr(node, "kernel_shape", a["kernel_shape"],
                                f"it differs from the weight's {list(kernel)}")
        dil = list(a.get("dilations", [1, 1]))
        if any(d != 1 for d in dil):
            raise self.bad_attr(node, "dilations", dil, "only 1")
        strides = list(a.get("strides", [strides_default] * 2))
        if len(strides) != 2:
            raise self.bad_attr(node, "strides", strides, "only 2-D windows")
        pads = list(a.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        if len(pads) != 4:
            raise self.bad_attr(node, "pads", pads, "only 2-D windows")
        if node.op != "Conv" and any(pads):
            raise self.bad_attr(node, "pads", pads, "only 0")
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise self.bad_attr(node, "pads", pads, "only symmetric padding: begin = end")
        if a.get("ceil_mode", 0):
            raise self.bad_attr(node, "ceil_mode", a["ceil_mode"], "only 0 (floor)")
        return (int(pads[0]), int(pads[1])), (int(strides[0]), int(strides[1]))

    def _op_MaxPool(self, node):
        if len([o for o in node.outputs if o]) > 1:
            raise self.fail(node, "the Indices output is not supported")
        kernel = list(node.attrs.get("kernel_shape", []))
        _, stride = self._window_attrs(node, kernel, strides_default=1)
        self.add_layer(node, MaxPool2d(tuple(kernel), stride),
                       (self.source(node, node.inputs[0]),), node.outputs[0])

    def _op_AveragePool(self, node):
        kernel = list(node.attrs.get("kernel_shape", []))
        _, stride = self._window_attrs(node, kernel, strides_default=1)
        self.add_layer(node, AvgPool2d(tuple(kernel), stride),
                       (self.source(node, node.inputs[0]),), node.outputs[0])

    def _op_GlobalAveragePool(self, node):
        self.add_layer(node, AdaptiveAvgPool2d(1), (self.source(node, node.inputs[0]),),
                       node.outputs[0])

    def _op_Relu(self, node):
        self.add_layer(node, ReLU(), (self.source(node, node.inputs[0]),), node.outputs[0])

    def _op_Clip(self, node):
        if self.opset >= 11:
            lo = hi = None
            if len(node.inputs) > 1 and node.inputs[1]:
                lo = float(np.asarray(self.const(node, node.inputs[1], "min")).reshape(-1)[0])
            if len(node.inputs) > 2 and node.inputs[2]:
                hi = float(np.asarray(self.const(node, node.inputs[2], "max")).reshape(-1)[0])
        else:
            lo, hi = node.attrs.get("min"), node.attrs.get("max")
        big = float(np.finfo(np.float32).max)
        if hi is not None and hi >= big:
            hi = None
        if lo is None or lo <= -big:
            lo = -math.inf
        if lo != 0:
            raise self.bad_attr(node, "min", lo, "only Clip(0, 6) = ReLU6 and Clip(0, inf) = "
                                "ReLU")
        if hi not in (None, 6.0):
            raise self.bad_attr(node, "max", hi, "only Clip(0, 6) = ReLU6 and Clip(0, inf) = "
                                "ReLU")
        act = ReLU6() if hi == 6.0 else ReLU()
        self.add_layer(node, act, (self.source(node, node.inputs[0]),), node.outputs[0])

    def _op_Add(self, node):
        a, b = node.inputs[:2]
        if a in self.consts or b in self.consts:
            raise self.fail(node, "adding a constant is only supported as the bias of a MatMul "
                            "(MatMul followed by Add = Linear)")
        self.add_layer(node, Add(self.tensor_layer[a], self.tensor_layer[b]),
                       (self.tensor_layer[a], self.tensor_layer[b]), node.outputs[0])
        # a sum of two ranges that start at 0.0 starts at 0.0 without any activation
        if not all(self.qparams.get(t, (0, 0))[1] == QMIN for t in (a, b)):
            self._maybe_removed_activation(node, node.outputs[0])

    def _flat_source(self, node, x):
        """Layer index of ``x`` flattened: a Flatten is inserted if ``x`` is (C, H, W)."""
        src = self.source(node, x)
        if len(self.shape_of(x)) == 1:
            return src
        flat = x + "/cnnforge_flatten"
        return self.add_layer(node, Flatten(), (src,), flat)

    def _op_Flatten(self, node):
        axis = int(node.attrs.get("axis", 1))
        rank = 1 + len(self.shape_of(node.inputs[0]))
        if axis not in (1, 1 - rank):
            raise self.bad_attr(node, "axis", axis, "only 1: flatten to (N, C·H·W)")
        self.add_layer(node, Flatten(), (self.source(node, node.inputs[0]),), node.outputs[0])

    def _op_Reshape(self, node):
        shape = [int(s) for s in np.asarray(self.const(node, node.inputs[1], "shape")).reshape(-1)]
        features = int(np.prod(self.shape_of(node.inputs[0])))
        batch = (0, 1, -1) + ((self.batch,) if self.batch else ())
        ok = len(shape) == 2 and ((shape[1] == -1 and shape[0] in batch and shape[0] != -1)
                                  or (shape[1] == features and shape[0] in batch))
        if ok and node.attrs.get("allowzero", 0) and 0 in shape:
            ok = False
        if not ok:
            raise self.bad_attr(node, "shape", shape, "only a flatten to (N, -1) or "
                                f"(N, {features})")
        self.add_layer(node, Flatten(), (self.source(node, node.inputs[0]),), node.outputs[0])

    def _op_Gemm(self, node):
        a = node.attrs
        for attr, want in (("alpha", 1.0), ("transA", 0)):
            if a.get(attr, want) != want:
                raise self.bad_attr(node, attr, a[attr], f"only {want}")
        has_c = len(node.inputs) > 2 and bool(node.inputs[2])
        if has_c and a.get("beta", 1.0) != 1.0:
            raise self.bad_attr(node, "beta", a["beta"], "only 1.0")
        w, wq = self._weights(node, node.inputs[1], "B")
        if w.ndim != 2:
            raise self.fail(node, f"B has shape {list(w.shape)}, expected 2-D")
        trans = not a.get("transB", 0)
        if trans:
            w = w.T
        self._linear(node, node.inputs[0], w, wq, axis=1 if trans else 0, transpose=trans,
                     bias_name=node.inputs[2] if has_c else None, out=node.outputs[0])

    def _op_MatMul(self, node):
        w, wq = self._weights(node, node.inputs[1], "B")
        if w.ndim != 2:
            raise self.fail(node, f"B has shape {list(w.shape)}, expected 2-D")
        x = node.inputs[0]
        if len(self.shape_of(x)) != 1:
            raise self.fail(node, f"input {x!r} has shape {list(self.shape_of(x))} per image; "
                            "MatMul needs a flat (N, K) input (Flatten before it)")
        out, bias = node.outputs[0], None
        nxt = self.readers.get(out, [])
        if len(nxt) == 1 and nxt[0].op == "Add":
            add = nxt[0]
            other = add.inputs[1] if add.inputs[0] == out else add.inputs[0]
            if other in self.consts:
                if out in self.qparams:
                    raise self.fail(add, "a bias Add after a requantized MatMul output is not "
                                    "supported in a QDQ model (export the layer as Gemm)")
                bias, out = other, add.outputs[0]
                add.absorbed = True
        self._linear(node, x, w.T, wq, axis=1, transpose=True, bias_name=bias, out=out)

    def _linear(self, node, x, w, wq, axis, transpose, bias_name, out):
        b = bq = None
        if bias_name:
            b, bq = self._weights(node, bias_name, "bias")
            if b.size not in (1, w.shape[0]) or b.ndim > 2:
                raise self.fail(node, f"bias has shape {list(b.shape)}, expected "
                                f"({w.shape[0]},)")
            b = np.broadcast_to(b.reshape(-1), (w.shape[0],)).copy()
        src = self._flat_source(node, x)
        layer = Linear(w.shape[1], w.shape[0], bias=b is not None)
        index = self.add_layer(node, layer, (src,), out, {"weight": w, "bias": b})
        self.qinfo[index] = dict(node=node, weight=wq, bias=bq, bias_float=b, axis=axis,
                                 transpose=transpose)
        self._maybe_removed_activation(node, out)

    # -- step 3: the quantized network of a QDQ model

    def _quantize(self, network):
        """The QuantizedNetwork of a QDQ model from its own scales and zero points, op by op as
        :func:`cnnforge.hw.frontend.quantize.quantize` builds it (same names, inputs and shapes)."""
        if self.input.name not in self.qparams:
            raise self.fail_graph(f"graph input {self.input.name!r} is not quantized (no "
                                  "QuantizeLinear reads it): a QDQ model must quantize its "
                                  "input")
        s_in, z_in = self.qparams[self.input.name]
        qnet = OnnxQuantizedNetwork(network, input_scale=s_in, input_zero_point=z_in)
        layer_op = {-1: -1}

        def out_params(op_index):
            if op_index < 0:
                return s_in, z_in
            return qnet.ops[op_index].output_scale, qnet.ops[op_index].output_zero_point

        for layer, shape in zip(network.layers, network.shapes):
            node = self.layer_node[layer.index]
            src = layer.sources[0]
            if isinstance(layer, (ReLU, ReLU6)):
                if (not qnet.ops or src < 0 or layer_op[src] != len(qnet.ops) - 1
                        or network.consumers(src) != [layer.index]):
                    raise self.fail(node, "an activation must be the only reader of the output "
                                    "of the Conv, Gemm, Add, pool or Flatten it is fused into")
                op = qnet.ops[-1]
                op.layers.append(layer)
                op.name = f"{op.name}+{layer.index}"
                layer_op[layer.index] = len(qnet.ops) - 1
                continue
            scale, zp = out_params(layer_op[src])
            common = dict(name=str(layer.index), layers=[layer], input_shape=shape.input,
                          output_shape=shape.output, input_scale=scale, input_zero_point=zp,
                          inputs=[layer_op[s] for s in layer.sources])
            fused = fused_activations(network, layer.index)
            last = fused[-1].index if fused else layer.index
            if isinstance(layer, (MaxPool2d, Flatten)):
                tensor = self.layer_tensor[last]
                if self.qparams.get(tensor, (scale, zp)) != (scale, zp):
                    raise self.fail(node, f"output {tensor!r} is quantized with "
                                    f"{self.qparams[tensor]}, not with its input's "
                                    f"{(scale, zp)}: a {node.op} cannot requantize")
                kind = "maxpool" if isinstance(layer, MaxPool2d) else "flatten"
                op = QuantOp(kind, output_scale=scale, output_zero_point=zp, **common)
                if kind == "maxpool":
                    op.kernel_size, op.stride = layer.kernel_size, layer.stride
            else:
                s_out, z_out = self._output_params(node, layer.index, last)
                if isinstance(layer, Add):
                    s2, z2 = out_params(layer_op[layer.sources[1]])
                    op = QuantOp("add", input2_scale=s2, input2_zero_point=z2,
                                 output_scale=s_out, output_zero_point=z_out, **common)
                    real = 2 * max(scale, s2) / ((1 << 20) * s_out)
                    if real >= 1:
                        raise self.fail(node, f"output scale {s_out:.6g} is below 2^-19 of "
                                        "its inputs' scale: not supported by the int8 add")
                    set_add_params(op, real)
                else:
                    op = QuantOp("conv" if isinstance(layer, (Conv2d, AvgPool2d)) else "linear",
                                 output_scale=s_out, output_zero_point=z_out, **common)
                    self._gemm_params(op, layer, node)
            clamp_bounds(op, fused)
            op.rounding = "nearest-even"        # as ONNX Runtime's requantization
            qnet.ops.append(op)
            layer_op[layer.index] = len(qnet.ops) - 1
        return qnet

    def _output_params(self, node, first, last):
        """The output (scale, zero point) of the op covering layers ``first``..``last``: the
        QuantizeLinear after the last; any quantized tensor in between must agree."""
        tensor = self.layer_tensor[last]
        if tensor not in self.qparams:
            raise self.fail(node, f"output {tensor!r} is not quantized (no QuantizeLinear "
                            "after it): a QDQ model must quantize every op's output")
        params = self.qparams[tensor]
        for index in range(first, last):
            inner = self.layer_tensor[index]
            if self.qparams.get(inner, params) != params:
                raise self.fail(node, f"output {inner!r} is quantized with "
                                f"{self.qparams[inner]} and the activation after it with "
                                f"{params}: an activation cannot requantize")
        return params

    def _gemm_params(self, op, layer, node):
        """Weights, bias, multipliers of a conv/linear op (AvgPool2d: all-ones weights of scale
        1/(kh·kw)) from the model's int8 weights and int32 bias."""
        m = op.output_shape[0]
        s_in, z_in, s_out = op.input_scale, op.input_zero_point, op.output_scale
        if isinstance(layer, AvgPool2d):
            (kh, kw), stride = layer.window(op.input_shape)
            c = op.input_shape[0]
            op.weight = np.ones((c, 1, kh, kw), np.int8)
            op.weight_scale = np.full(c, 1.0 / (kh * kw))
            op.kernel_size, op.stride, op.groups = (kh, kw), stride, c
            bias_raw = np.zeros(c, np.int64)
        else:
            info = self.qinfo[layer.index]
            wq = info["weight"]
            if wq is None:
                raise self.fail(node, "weight is not quantized (no DequantizeLinear): a QDQ "
                                "model needs int8 weights")
            where = f"(DequantizeLinear {wq.node.name!r})"
            if wq.q.dtype != np.int8:
                raise self.fail(node, f"weight type {wq.q.dtype} {where} is not supported "
                                "(int8 weights only)")
            if np.any(wq.zero_point != 0):
                raise self.fail(node, f"weight zero point {_fmt(np.unique(wq.zero_point))} "
                                f"{where} is not supported: weights must be symmetric (zero "
                                "point 0)")
            q = wq.q.T if info["transpose"] else wq.q
            if q.min() < -WMAX:
                raise self.fail(node, f"weight value {int(q.min())} {where} is not supported "
                                f"(int8 weights in [-{WMAX}, {WMAX}]: symmetric quantization)")
            op.weight = np.ascontiguousarray(q).astype(np.int8)
            op.weight_scale = self._channel_scale(node, wq, m, info["axis"], "weight",
                                                  where).astype(np.float64)
            if isinstance(layer, Conv2d):
                op.kernel_size, op.stride, op.padding = (layer.kernel_size, layer.stride,
                                                         layer.padding)
                op.groups = layer.groups
            bq = info["bias"]
            expect = (np.float32(s_in) * op.weight_scale.astype(np.float32)).astype(np.float64)
            if bq is not None:
                bwhere = f"(DequantizeLinear {bq.node.name!r})"
                if bq.q.dtype != np.int32 or np.any(bq.zero_point != 0):
                    raise self.fail(node, f"bias {bwhere} must be int32 with zero point 0, got "
                                    f"{bq.q.dtype} with zero point "
                                    f"{_fmt(np.unique(bq.zero_point))}")
                b_scale = self._channel_scale(node, bq, m, 0, "bias", bwhere)
                bad = np.abs(b_scale - expect) > _BIAS_SCALE_RTOL * expect
                if bad.any():
                    k = int(np.argmax(bad))
                    raise self.fail(node, f"bias scale {b_scale[k]:.6g} {bwhere} of output "
                                    f"channel {k} is not input scale x weight scale = "
                                    f"{expect[k]:.6g}")
                bias_raw = np.broadcast_to(bq.q.reshape(-1).astype(np.int64), (m,))
            elif info["bias_float"] is not None:       # a float bias: quantized as quantize()
                bias_raw = np.round(info["bias_float"].astype(np.float64)
                                    / (s_in * op.weight_scale))
                bias_raw = np.clip(bias_raw, -(1 << 31), (1 << 31) - 1).astype(np.int64)
            else:
                bias_raw = np.zeros(m, np.int64)
        op.bias_raw = bias_raw.astype(np.int32)
        wsum = op.weight.reshape(m, -1).astype(np.int64).sum(axis=1)
        folded = bias_raw - z_in * wsum
        if (np.abs(folded) + op.weight[0].size * 128 * WMAX).max() >= 1 << 31:
            raise self.fail(node, "accumulator could overflow int32 (bias too large for its "
                            "scale)")
        op.bias = folded.astype(np.int32)
        real = s_in * op.weight_scale / s_out
        if real.max() >= 1:
            k = int(np.argmax(real))
            raise self.fail(node, f"requantization multiplier input scale x weight scale / "
                            f"output scale = {real[k]:.6g} (output channel {k}) is >= 1: not "
                            "supported (the requantizer shifts right only; the output scale "
                            "must exceed input scale x weight scale)")
        pairs = [quantize_multiplier(r) for r in real]
        op.multiplier = np.array([p[0] for p in pairs], np.int64)
        op.shift = np.array([p[1] for p in pairs], np.int64)

    def _channel_scale(self, node, qc, m, axis, what, where):
        scale = np.asarray(qc.scale, np.float64).reshape(-1)
        if scale.size == 1:
            scale = np.full(m, scale[0])
        elif scale.size != m or (qc.q.ndim > 1 and qc.axis % qc.q.ndim != axis):
            raise self.fail(node, f"{what} scale of shape {list(qc.scale.shape)} along axis "
                            f"{qc.axis} {where} is not per output channel")
        if not np.all((scale > 0) & np.isfinite(scale)):
            raise self.fail(node, f"{what} scale {where} must be positive and finite")
        return scale


def _along(values, axis, ndim):
    """A scale or zero point (scalar or 1-D) shaped to broadcast along ``axis`` of an
    ``ndim``-D tensor (ONNX per-axis quantization)."""
    values = np.asarray(values)
    if values.size == 1 or ndim == 0:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return values.reshape(shape)


def load_onnx(path):
    """Import an ONNX model as a :class:`~cnnforge.hw.frontend.network.Sequential`.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.onnx`` file: one graph input, float32 (N, C, H, W) with fixed C, H, W (the batch
        axis may be symbolic); one graph output.

    Returns
    -------
    Sequential
        The float network (weights float32; for a QDQ model the dequantized int8 weights), with

        * ``source``: ``path``;
        * ``onnx_nodes``: the ONNX node name each layer comes from (a Flatten the importer
          inserts before a Gemm, or an activation it restores, carries its node's name);
        * ``onnx_tensors``: the float ONNX tensor each layer's output stands for (in a QDQ
          model, the input of the QuantizeLinear that quantizes it);
        * ``quantized``: for a QDQ model an :class:`OnnxQuantizedNetwork` built from the
          model's scales and zero points (what :func:`~cnnforge.hw.frontend.quantize.quantize`
          returns for this network), else ``None``.

    Node mapping (ONNX operator spec): Conv → Conv2d (``group`` as ``groups``: dense, grouped
    and depthwise; symmetric ``pads``; dilation 1); Gemm (alpha = beta = 1, transA = 0, either
    transB) and MatMul, followed by an Add of a constant bias or not → Linear, with a Flatten
    inserted if its input is (C, H, W); Relu → ReLU; Clip(0, 6) → ReLU6, Clip(0, ∞) → ReLU
    (min/max as inputs from opset 11, attributes before); MaxPool and AveragePool without
    padding, floor mode → MaxPool2d, AvgPool2d; GlobalAveragePool → AdaptiveAvgPool2d(1);
    Add of two activations → Add; Flatten (axis 1) and Reshape to (N, −1) → Flatten;
    Identity, Dropout and Constant are folded away; nodes the output does not depend on are
    dropped.

    QDQ models (ONNX Runtime's format): the input scale and zero point come from the
    QuantizeLinear of the graph input; each op's input scale from the DequantizeLinear that
    feeds it and its output scale from the QuantizeLinear after it (after its Relu/Clip, which
    become the clamp bounds); weights are int8 with a zero point of 0 and a scale per output
    channel or per tensor; biases int32 with scale ``s_in·s_w[m]`` and zero point 0 (checked);
    MaxPool, Flatten and Reshape keep their input's scale. Its ops requantize with
    ``rounding="nearest-even"`` (one rounding of the exact product, ties to even, as ONNX
    Runtime's ``MlasRequantizeOutput``; :func:`cnnforge.sim.golden.requantize`), not gemmlowp's.

    Raises
    ------
    NetworkError
        One line naming the file (and the node and its op type): a missing or unreadable file,
        an unsupported op type or attribute, more than one graph input or output, a
        non-symmetric weight, an inconsistent bias scale, a requantization multiplier ≥ 1, ...
    """
    import onnx
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NetworkError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError, a truncated file, external data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise NetworkError(f"{path}: cannot read the ONNX model ({type(exc).__name__}"
                           f"{': ' + first if first else ''})") from None
    if not model.graph.node:
        raise NetworkError(f"{path}: cannot read the ONNX model (it has no graph nodes)")
    return _Importer(path, model).build()
