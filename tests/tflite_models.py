"""Small int8 ``.tflite`` models for tests, written with the ``tflite`` package's flatbuffer
builder functions (no TensorFlow), and :func:`run_tflm` to run them on TensorFlow Lite Micro's
reference kernels (the ``tflite-micro`` Python interpreter).

The flatbuffer layout follows TFLite's schema (``tensorflow/lite/schema/schema.fbs``): a
``Model`` of version 3 with one ``SubGraph``, its ``Tensor``\\ s, ``Operator``\\ s and
``OperatorCode``\\ s, and a ``Buffer`` list whose buffer 0 is empty (every tensor without
constant data refers to it). Tensors are NHWC as in TFLite: convolution filters
``[O, kh, kw, I]``, depthwise filters ``[1, kh, kw, C·mult]`` (per-channel scales on dimension
3), fully-connected weights ``[O, I]``, biases int32 with scale ``s_in · s_w[o]`` and zero point
0.

Example::

    b = TfliteBuilder()
    x = b.tensor([1, 10], scale=0.1, zero_point=3)
    y = b.tensor([1, 10], scale=1 / 256, zero_point=-128)
    b.op("SOFTMAX", [x], [y], beta=1.0)
    out = run_tflm(b.build([x], [y]), np.zeros((1, 10), np.int8))
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import tflite
from tflite_micro.python.tflite_micro import runtime

__all__ = ["TfliteBuilder", "run_tflm"]

SCHEMA_VERSION = 3
BUFFER_ALIGNMENT = 16           # ``force_align: 16`` of ``Buffer.data`` in schema.fbs
PLACEHOLDER_FOR_GREATER_OP_CODES = 127   # ``deprecated_builtin_code`` of opcodes above 127

PADDINGS = ("SAME", "VALID")
ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")

# Options each opcode accepts, with their defaults (``None``: required).
_WINDOW = {"padding": "VALID", "stride": (1, 1), "activation": "NONE"}
_OP_OPTIONS = {
    "CONV_2D": {**_WINDOW, "dilation": (1, 1)},
    "DEPTHWISE_CONV_2D": {**_WINDOW, "dilation": (1, 1), "depth_multiplier": 1},
    "FULLY_CONNECTED": {"activation": "NONE", "keep_num_dims": False},
    "AVERAGE_POOL_2D": {**_WINDOW, "filter": None},
    "MAX_POOL_2D": {**_WINDOW, "filter": None},
    "ADD": {"activation": "NONE"},
    "RESHAPE": {"new_shape": None},     # default: the output tensor's shape
    "SOFTMAX": {"beta": 1.0},
    "MEAN": {"keep_dims": False},
}


def _enum(enum_class, name, what, choices):
    if name not in choices:
        raise ValueError(f"{what}={name!r}: choose one of {', '.join(choices)}")
    return getattr(enum_class, name)


def _pair(value, what):
    pair = tuple(int(v) for v in np.broadcast_to(np.asarray(value), (2,)))
    if min(pair) < 1:
        raise ValueError(f"{what}={value!r}: give positive integers (h, w)")
    return pair


def _int_vector(b, values, dtype=np.int32):
    return b.CreateNumpyVector(np.asarray(values, dtype).reshape(-1))


def _offset_vector(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _aligned_bytes(b, payload, alignment=BUFFER_ALIGNMENT):
    """A ``[ubyte]`` vector whose first byte is ``alignment``-aligned in the finished model."""
    b.StartVector(1, len(payload), alignment)
    b.head -= len(payload)
    b.Bytes[b.head:b.head + len(payload)] = payload
    return b.EndVector()


def _table(b, name, fields):
    """Write the table ``tflite.<name>`` with ``(field, value)`` pairs; returns its offset."""
    getattr(tflite, f"{name}Start")(b)
    for field, value in fields:
        getattr(tflite, f"{name}Add{field}")(b, value)
    return getattr(tflite, f"{name}End")(b)


class _Tensor:
    def __init__(self, shape, dtype, scale, zero_point, data, quantized_dimension, name):
        self.shape, self.dtype, self.name = shape, dtype, name
        self.scale, self.zero_point = scale, zero_point
        self.data, self.quantized_dimension = data, quantized_dimension


class TfliteBuilder:
    """Collects tensors and operators and writes them as one ``.tflite`` flatbuffer.

    Tensor indices are the order of :meth:`tensor` calls; operators run in the order of
    :meth:`op` calls (TFLite executes a subgraph's operators in list order).
    """

    def __init__(self):
        self._tensors = []
        self._ops = []

    def tensor(self, shape, dtype="int8", scale=None, zero_point=None, data=None,
               quantized_dimension=0, name=None):
        """Add a tensor; returns its index.

        Parameters
        ----------
        shape : sequence of int
        dtype : str or numpy dtype
            ``"int8"``, ``"int16"``, ``"int32"``, ``"int64"``, ``"uint8"``, ``"float32"``,
            ``"bool"``.
        scale : float or 1-D sequence of float, optional
            Quantization scale, one per tensor or one per channel of ``quantized_dimension``.
            ``None``: the tensor is not quantized (axis and shape tensors, float tensors).
        zero_point : int or 1-D sequence of int, optional
            Broadcast to the length of ``scale``; 0 when omitted.
        data : ndarray, optional
            Constant contents (cast to ``dtype``, ``data.size`` must match ``shape``); the tensor
            gets its own buffer. Without data the tensor is an activation (buffer 0).
        quantized_dimension : int
            Channel axis of per-channel scales (0 for convolution and fully-connected weights,
            3 for depthwise filters).
        name : str, optional
            Defaults to ``"t<index>"``.

        Raises
        ------
        ValueError
            If ``data`` does not fit ``shape``, or ``zero_point`` does not match ``scale``.
        TypeError
            For a dtype TFLite has no ``TensorType`` for.
        """
        shape = [int(d) for d in shape]
        dtype = np.dtype(dtype)
        if not hasattr(tflite.TensorType, dtype.name.upper()):
            raise TypeError(f"dtype {dtype.name} has no TFLite TensorType")
        if data is not None:
            data = np.asarray(data).astype(dtype)
            if data.size != int(np.prod(shape)):
                raise ValueError(f"data of {data.size} elements does not fit shape {shape}")
        if scale is not None:
            scale = np.atleast_1d(np.asarray(scale, np.float32))
            zp = np.atleast_1d(np.asarray(0 if zero_point is None else zero_point, np.int64))
            if zp.size not in (1, scale.size):
                raise ValueError(f"{zp.size} zero points for {scale.size} scales")
            zero_point = np.broadcast_to(zp, scale.shape)
        elif zero_point is not None:
            raise ValueError("a zero point needs a scale")
        index = len(self._tensors)
        self._tensors.append(_Tensor(shape, dtype, scale, zero_point, data,
                                     int(quantized_dimension),
                                     f"t{index}" if name is None else str(name)))
        return index

    def op(self, opcode, inputs, outputs, **options):
        """Add an operator.

        Parameters
        ----------
        opcode : str
            A ``BuiltinOperator`` name. ``CONV_2D``, ``DEPTHWISE_CONV_2D``,
            ``FULLY_CONNECTED``, ``AVERAGE_POOL_2D``, ``MAX_POOL_2D``, ``ADD``, ``RESHAPE``,
            ``SOFTMAX`` and ``MEAN`` take the options below; any other builtin (``QUANTIZE``,
            ``DEQUANTIZE``, ``TANH``, ...) is written without options.
        inputs, outputs : sequence of int
            Tensor indices (``-1`` for an optional input left out, as TFLite does).
        padding : ``"SAME"`` or ``"VALID"``
            Convolutions and pools; default ``"VALID"``.
        stride, dilation : (int, int)
            (h, w); default (1, 1).
        activation : ``"NONE"``, ``"RELU"``, ``"RELU6"`` or ``"RELU_N1_TO_1"``
            Fused activation; default ``"NONE"``.
        depth_multiplier : int
            DEPTHWISE_CONV_2D; default 1.
        filter : (int, int)
            Pool window (h, w); required for the pools.
        beta : float
            SOFTMAX; default 1.0.
        new_shape : sequence of int
            RESHAPE; default the output tensor's shape.
        keep_num_dims : bool
            FULLY_CONNECTED; default False.
        keep_dims : bool
            MEAN (the reduced axes are its second input, an int32 constant); default False.

        Raises
        ------
        ValueError
            For an unknown opcode, an option the opcode does not take, a missing required
            option, or an unknown padding or activation name.
        """
        if not hasattr(tflite.BuiltinOperator, opcode):
            raise ValueError(f"{opcode!r} is not a TFLite BuiltinOperator")
        accepted = _OP_OPTIONS.get(opcode, {})
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"{opcode} takes no option {', '.join(unknown)}"
                             f" (it takes: {', '.join(accepted) or 'none'})")
        merged = {**accepted, **options}
        missing = [k for k, v in merged.items() if v is None and k != "new_shape"]
        if missing:
            raise ValueError(f"{opcode} needs the option {', '.join(missing)}")
        if opcode == "RESHAPE" and merged["new_shape"] is None:
            merged["new_shape"] = self._tensors[outputs[0]].shape
        # Validate now, so that a mistake points at the op() call rather than build().
        self._options_fields(opcode, merged)
        self._ops.append((opcode, [int(i) for i in inputs], [int(i) for i in outputs], merged))

    @staticmethod
    def _options_fields(opcode, o):
        """(options table name, [(field, value)], {field: int vector}) of one operator."""
        if opcode not in _OP_OPTIONS:
            return None, [], {}
        fields = []
        if "padding" in o:
            fields.append(("Padding", _enum(tflite.Padding, o["padding"], "padding", PADDINGS)))
        if "stride" in o:
            sh, sw = _pair(o["stride"], "stride")
            fields += [("StrideH", sh), ("StrideW", sw)]
        if "activation" in o:
            fields.append(("FusedActivationFunction", _enum(
                tflite.ActivationFunctionType, o["activation"], "activation", ACTIVATIONS)))
        if "dilation" in o:
            dh, dw = _pair(o["dilation"], "dilation")
            fields += [("DilationHFactor", dh), ("DilationWFactor", dw)]
        if "depth_multiplier" in o:
            fields.append(("DepthMultiplier", int(o["depth_multiplier"])))
        if "filter" in o:
            fh, fw = _pair(o["filter"], "filter")
            fields += [("FilterHeight", fh), ("FilterWidth", fw)]
        if "keep_num_dims" in o:
            fields.append(("KeepNumDims", bool(o["keep_num_dims"])))
        if "keep_dims" in o:
            fields.append(("KeepDims", bool(o["keep_dims"])))
        if "beta" in o:
            fields.append(("Beta", float(o["beta"])))
        vectors = {"NewShape": [int(d) for d in o["new_shape"]]} if "new_shape" in o else {}
        table = {
            "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
            "FULLY_CONNECTED": "FullyConnectedOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
            "MAX_POOL_2D": "Pool2DOptions", "ADD": "AddOptions", "RESHAPE": "ReshapeOptions",
            "SOFTMAX": "SoftmaxOptions", "MEAN": "ReducerOptions",
        }[opcode]
        return table, fields, vectors

    def build(self, inputs, outputs):
        """The complete model as bytes (file identifier ``TFL3``).

        Parameters
        ----------
        inputs, outputs : sequence of int
            The subgraph's input and output tensor indices.

        Returns
        -------
        bytes
        """
        b = flatbuffers.Builder(1024)

        # Buffers: 0 empty, then one per constant tensor.
        buffers = [_table(b, "Buffer", [])]
        buffer_of = {}
        for index, t in enumerate(self._tensors):
            if t.data is not None:
                payload = t.data.astype(t.data.dtype.newbyteorder("<")).tobytes()
                data = _aligned_bytes(b, payload)
                buffer_of[index] = len(buffers)
                buffers.append(_table(b, "Buffer", [("Data", data)]))

        tensors = []
        for index, t in enumerate(self._tensors):
            name = b.CreateString(t.name)
            shape = _int_vector(b, t.shape)
            fields = [("Shape", shape), ("Type", getattr(tflite.TensorType, t.dtype.name.upper())),
                      ("Buffer", buffer_of.get(index, 0)), ("Name", name)]
            if t.scale is not None:
                scale = b.CreateNumpyVector(t.scale.astype("<f4"))
                zero_point = _int_vector(b, t.zero_point, "<i8")
                quant = _table(b, "QuantizationParameters", [
                    ("Scale", scale), ("ZeroPoint", zero_point),
                    ("QuantizedDimension", t.quantized_dimension)])
                fields.append(("Quantization", quant))
            tensors.append(_table(b, "Tensor", fields))

        opcodes = list(dict.fromkeys(opcode for opcode, *_ in self._ops))
        operators = []
        for opcode, op_inputs, op_outputs, options in self._ops:
            ins, outs = _int_vector(b, op_inputs), _int_vector(b, op_outputs)
            table, fields, vectors = self._options_fields(opcode, options)
            fields = [(k, _int_vector(b, v)) for k, v in vectors.items()] + fields
            op_fields = [("OpcodeIndex", opcodes.index(opcode)), ("Inputs", ins),
                         ("Outputs", outs)]
            if table is not None:
                op_fields += [("BuiltinOptionsType", getattr(tflite.BuiltinOptions, table)),
                              ("BuiltinOptions", _table(b, table, fields))]
            operators.append(_table(b, "Operator", op_fields))

        codes = []
        for opcode in opcodes:
            code = getattr(tflite.BuiltinOperator, opcode)
            codes.append(_table(b, "OperatorCode", [
                ("DeprecatedBuiltinCode", min(code, PLACEHOLDER_FOR_GREATER_OP_CODES)),
                ("BuiltinCode", code), ("Version", 1)]))

        subgraph = _table(b, "SubGraph", [
            ("Tensors", _offset_vector(b, tensors)), ("Inputs", _int_vector(b, inputs)),
            ("Outputs", _int_vector(b, outputs)), ("Operators", _offset_vector(b, operators)),
            ("Name", b.CreateString("main"))])
        model = _table(b, "Model", [
            ("Version", SCHEMA_VERSION), ("OperatorCodes", _offset_vector(b, codes)),
            ("Subgraphs", _offset_vector(b, [subgraph])),
            ("Description", b.CreateString("cnnforge tests/tflite_models.py")),
            ("Buffers", _offset_vector(b, buffers))])
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def run_tflm(model_bytes, x, arena_size=None):
    """Run a one-input model on TensorFlow Lite Micro's reference kernels.

    Parameters
    ----------
    model_bytes : bytes
        A ``.tflite`` flatbuffer (e.g. from :meth:`TfliteBuilder.build`).
    x : ndarray
        Input 0, with the dtype and shape of the model's input tensor.
    arena_size : int, optional
        Tensor arena in bytes; default 1 MiB plus ten times the model size.

    Returns
    -------
    ndarray
        A copy of output 0 after one ``invoke()``.

    Raises
    ------
    RuntimeError
        If TFLite Micro refuses the model ("TFLM failed to allocate tensors": an unregistered op,
        or a kernel's ``Prepare`` refusing its tensors) or the invocation fails (a kernel's
        ``Eval`` refusing a type); the reason is printed on stderr.
    ValueError
        If ``x`` does not have the input tensor's dtype and shape.
    """
    if arena_size is None:
        arena_size = (1 << 20) + 10 * len(model_bytes)
    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)
    interpreter.set_input(np.ascontiguousarray(x), 0)
    interpreter.invoke()
    return np.array(interpreter.get_output(0), copy=True)


def same_padding(size, kernel, stride):
    """TFLite's SAME padding of one axis (``ComputePaddingHeightWidth``): (output size, padding
    before, padding after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2
