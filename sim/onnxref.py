"""ONNX Runtime as an independent reference for imported ONNX models.

For a QDQ model (``onnxruntime.quantization.quantize_static``, int8), ONNX Runtime's int8
results are compared with the golden model (:func:`cnnforge.sim.golden.run_quantized`) of the
network :func:`cnnforge.hw.frontend.onnx_import.load_onnx` imports from the same file. ONNX Runtime
fuses each DequantizeLinear → op → QuantizeLinear group into an integer kernel (QLinearConv,
QGemm, QLinearAdd, QLinearAveragePool) that requantizes in float32 (``acc·(s_in·s_w/s_out)``
rounded half to even); the imported network requantizes in fixed point with one rounding, ties
to even (``rounding="nearest-even"``), and adds with TFLite's int8 add. An output may differ by
one step where float32 rounding decides a tie (QLinearAveragePool sums dequantized floats) or
the add's rescaling rounds; ``docs/onnx.md`` gives the measured agreement.

The int8 tensors are read from the graph itself: the output of the graph input's
QuantizeLinear and the input of the graph output's DequantizeLinear are made graph outputs of
the session (ONNX Runtime computes the same values; it only returns them too).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from cnnforge.hw.frontend.loader import load_network
from cnnforge.sim.golden import ROUNDINGS, run_op

__all__ = ["onnxruntime_int8_outputs", "onnxruntime_outputs", "compare_with_onnxruntime"]


def _session(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1                  # the machine's cores are shared
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _run(session, model, x, names):
    """Run ``session`` on ``x`` (float32 (B, C, H, W)), batched if the model's batch axis is
    symbolic, else one fixed-size batch at a time; returns the ``names`` outputs, each with B
    rows."""
    initializers = {t.name for t in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    dim = graph_input.type.tensor_type.shape.dim[0]
    batch = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
    x = np.ascontiguousarray(x, np.float32)
    if batch is None:
        chunks = [x[i:i + 512] for i in range(0, len(x), 512)]
    else:
        chunks = [x[i:i + batch] for i in range(0, len(x), batch)]
    outs = [[] for _ in names]
    for chunk in chunks:
        n = len(chunk)
        if batch is not None and n < batch:                       # pad the last batch
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.float32)])
        for out, value in zip(outs, session.run(names, {graph_input.name: chunk})):
            out.append(np.asarray(value)[:n])
    return [np.concatenate(out) for out in outs]


def _qdq_endpoints(model, path):
    """(graph input Q output, graph output DQ input, DQ scale, DQ zero point) of a QDQ model."""
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    q_in = next((n for n in g.node if n.op_type == "QuantizeLinear"
                 and inputs and n.input[0] == inputs[0].name), None)
    dq_out = next((n for n in g.node if n.op_type == "DequantizeLinear"
                   and n.output[0] == g.output[0].name), None)
    if q_in is None or dq_out is None:
        raise ValueError(f"{path}: not a QDQ model (no QuantizeLinear on the graph input or no "
                         "DequantizeLinear producing the graph output)")
    scale = np.float32(consts[dq_out.input[1]].reshape(-1)[0])
    zp = int(consts[dq_out.input[2]].reshape(-1)[0]) if len(dq_out.input) > 2 else 0
    return q_in.output[0], dq_out.input[0], scale, zp


def _load(path):
    return onnx.load(str(path))


def _ort_int8(path, x, tensors=()):
    """ONNX Runtime on a QDQ model: (int8 input (B, C, H, W), int8 outputs (B, F), float
    outputs (B, F), {tensor: int8 value} for the QuantizeLinear outputs of ``tensors``)."""
    model = _load(path)
    q_in, q_out, scale, zp = _qdq_endpoints(model, path)
    quantized = {n.input[0]: n.output[0] for n in model.graph.node
                 if n.op_type == "QuantizeLinear"}
    inner = {t: quantized[t] for t in tensors if t in quantized}
    names = [o.name for o in model.graph.output]
    for name in (q_in, q_out, *inner.values()):
        if name not in names:
            names.append(name)
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.INT8, None))
    x = np.asarray(x, np.float32)
    y, xq, yq, *rest = _run(_session(model), model, x,
                            [model.graph.output[0].name, q_in, q_out, *inner.values()])
    yq = yq.reshape(len(x), -1)
    # the graph's own DequantizeLinear must agree with the int8 tensor read before it
    if not np.array_equal(y.reshape(len(x), -1),
                          (yq.astype(np.int32) - zp).astype(np.float32) * scale):
        raise RuntimeError(f"{path}: ONNX Runtime's output is not the DequantizeLinear of the "
                           "int8 tensor read before it")
    return xq, yq, y, dict(zip(inner, rest))


def onnxruntime_int8_outputs(path, x_float):
    """ONNX Runtime's int8 logits of a QDQ model.

    Parameters
    ----------
    path : str or os.PathLike
        A QDQ ``.onnx`` model whose graph output is produced by a DequantizeLinear.
    x_float : ndarray, float, shape (B, C, H, W)
        Float inputs (the model quantizes them itself).

    Returns
    -------
    ndarray, int8, shape (B, outputs)
        The input of the final DequantizeLinear (checked against the float output:
        ``y = (q − z)·s`` exactly).

    Raises
    ------
    ValueError
        If the model is not a QDQ model.
    """
    return _ort_int8(path, x_float)[1]


def onnxruntime_outputs(path, x_float):
    """ONNX Runtime's (float) graph output for float inputs ``x_float`` (B, C, H, W): the
    reference for an imported float model's ``network.forward``. Returns float32 (B, ...)."""
    model = _load(path)
    return _run(_session(model), model, x_float, [model.graph.output[0].name])[0]


def _with_rounding(qnet, rounding):
    """The network's ops, with ``rounding`` instead of their own (``None``: as they are)."""
    if rounding is None:
        return list(qnet.ops)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r}: choose one of {', '.join(ROUNDINGS)}")
    return [dataclasses.replace(op, rounding=rounding) for op in qnet.ops]


def compare_with_onnxruntime(network_or_path, x_float, *, rounding=None):
    """Golden model vs ONNX Runtime on a QDQ model.

    Parameters
    ----------
    network_or_path : Sequential or str or os.PathLike
        A network imported from a QDQ model (``load_network``/``load_onnx``; its ``source`` is
        the file ONNX Runtime runs), or the model's path.
    x_float : ndarray, float, shape (B, C, H, W)
    rounding : None, ``"gemmlowp"`` or ``"nearest-even"``
        ``None``: the golden model as it is, bit-exact with the hardware (an imported QDQ model
        requantizes with ``"nearest-even"``, as ONNX Runtime). Otherwise a what-if: the same
        integer parameters with the other requantizer (:func:`cnnforge.sim.golden.requantize`;
        gemmlowp's double rounding alone moves an output by one step when the exact value lies
        within 2^−(n+1) below a half, ``n`` the shift).

    Returns
    -------
    dict
        ``images``; ``elements`` (output values compared); ``identical_fraction``;
        ``max_abs_lsb`` (largest |golden − ONNX Runtime| in output steps); ``histogram``
        ({difference: count}); ``top1_agreement`` (fraction of images whose argmax is the
        same); ``input_identical_fraction`` and ``input_max_abs_lsb`` (our input quantization,
        ``qnet.quantize_input``, against ONNX Runtime's QuantizeLinear; must be 1.0 and 0).
        The golden model runs on our own quantized input.

    Raises
    ------
    ValueError
        If the network carries no quantization of its own (a float model).
    """
    network = network_or_path
    if not hasattr(network, "layers"):
        network = load_network(network_or_path)
    qnet = getattr(network, "quantized", None)
    if qnet is None:
        raise ValueError(f"{network.source}: not a QDQ model (no quantization of its own)")
    x = np.asarray(x_float, np.float32)
    xq = qnet.quantize_input(x)
    tensors = getattr(network, "onnx_tensors", None) or []
    op_tensor = [tensors[op.layers[-1].index] if tensors else None for op in qnet.ops]
    ops = _with_rounding(qnet, rounding)
    ort_xq, ort_yq, _, inner = _ort_int8(network.source, x, [t for t in op_tensor if t])
    outs = []
    for op in ops:
        outs.append(run_op(op, *(xq if i < 0 else outs[i] for i in op.inputs)))
    golden = outs[-1].reshape(len(x), -1)
    per_op = {}
    for op, tensor in zip(ops, op_tensor):
        ins = [ort_xq if i < 0 else inner.get(op_tensor[i]) for i in op.inputs]
        if tensor not in inner or any(v is None for v in ins):
            continue
        mine = run_op(op, *(v.reshape(len(x), *ops[i].output_shape) if i >= 0
                            else v for v, i in zip(ins, op.inputs)))
        d = np.abs(mine.astype(np.int32).reshape(-1) - inner[tensor].astype(np.int32).reshape(-1))
        per_op[op.name] = {"type": op.type, "identical_fraction": float(np.mean(d == 0)),
                           "max_abs_lsb": int(d.max()) if d.size else 0}
    diff = np.abs(golden.astype(np.int32) - ort_yq.astype(np.int32))
    in_diff = np.abs(xq.astype(np.int32) - ort_xq.reshape(xq.shape).astype(np.int32))
    values, counts = np.unique(diff, return_counts=True)
    return {
        "images": int(len(x)),
        "elements": int(diff.size),
        "identical_fraction": float(np.mean(diff == 0)),
        "max_abs_lsb": int(diff.max()) if diff.size else 0,
        "histogram": {int(v): int(c) for v, c in zip(values, counts)},
        "top1_agreement": float(np.mean(golden.argmax(axis=1) == ort_yq.argmax(axis=1))),
        "input_identical_fraction": float(np.mean(in_diff == 0)),
        "input_max_abs_lsb": int(in_diff.max()) if in_diff.size else 0,
        "per_op": per_op,
    }
