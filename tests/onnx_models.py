"""ONNX models for the importer's tests and ``benchmarks/onnx_agreement.py``, built with
``onnx.helper`` (no PyTorch): a small residual CNN, float and QDQ (ONNX Runtime's
``quantize_static``), on scikit-learn's bundled 8×8 digits."""

from __future__ import annotations

import numpy as np

OPSET = 17


def digits_split():
    """The digits split every example uses: (x_train, y_train, x_test, y_test), x float32
    (N, 1, 8, 8) in [0, 1] (pixels / 16), y int64; ``train_test_split(test_size=0.25,
    random_state=0, stratify=y)``: 1347 training and 450 held-out images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    return x_train, y_train, x_test, y_test


def residual_weights(channels=16, seed=0):
    """Random weights of :func:`residual_model` (He-initialised convolutions, small biases; the
    Gemm is random too: the logits are not a classifier, which a global average pool of an 8×8
    digit would make a poor one anyway, but they are well conditioned)."""
    rng = np.random.default_rng(seed)
    c = channels
    w = {
        "w0": rng.normal(0, np.sqrt(2 / 9), (c, 1, 3, 3)), "b0": rng.normal(0, 0.1, c),
        "w1": rng.normal(0, np.sqrt(2 / 9), (c, 1, 3, 3)), "b1": rng.normal(0, 0.1, c),
        "w2": rng.normal(0, np.sqrt(1 / c), (c, c, 1, 1)), "b2": rng.normal(0, 0.1, c),
        "wf": rng.normal(0, np.sqrt(1 / c), (10, c)), "bf": rng.normal(0, 0.1, 10),
    }
    return {k: v.astype(np.float32) for k, v in w.items()}


def residual_model(path, weights, *, clip_as_attributes=False):
    """Write the float residual model built with ``onnx.helper``::

        a = Relu(Conv 3×3 p1 (input (N, 1, 8, 8)))                        "conv0", "relu0"
        b = Conv 1×1 (Clip(0, 6)(depthwise Conv 3×3 p1 (a)))     "dwconv", "clip6", "pwconv"
        logits (N, 10) = Gemm(Flatten(GlobalAveragePool(a + b)))  "residual", "gap", ..., "fc"

    ``clip_as_attributes`` writes opset 6 (Clip's min/max as attributes) instead of opset 17.
    Returns ``path``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = weights["w0"].shape[0]
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    if clip_as_attributes:
        clip = helper.make_node("Clip", ["h1"], ["a1"], name="clip6", min=0.0, max=6.0)
    else:
        inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                  numpy_helper.from_array(np.array(6, np.float32), "six")]
        clip = helper.make_node("Clip", ["h1", "zero", "six"], ["a1"], name="clip6")
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["h0"], name="conv0",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h0"], ["a0"], name="relu0"),
        helper.make_node("Conv", ["a0", "w1", "b1"], ["h1"], name="dwconv", group=c,
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        clip,
        helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name="pwconv", kernel_shape=[1, 1]),
        helper.make_node("Add", ["a0", "h2"], ["sum"], name="residual"),
        helper.make_node("GlobalAveragePool", ["sum"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    opset = 6 if clip_as_attributes else OPSET
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cnnforge-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def quantize_qdq(float_path, qdq_path, calibration, per_channel=True, **extra):
    """ONNX Runtime's static quantization, QDQ format, int8 activations and (per-channel) int8
    weights, calibrated (min/max) on ``calibration`` (float32 (B, C, H, W)) in batches of 32.
    ``extra`` goes to ``quantize_static(extra_options=...)``. Returns ``qdq_path``."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([calibration[i:i + 32] for i in range(0, len(calibration), 32)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": np.ascontiguousarray(batch)}

    quantize_static(str(float_path), str(qdq_path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options=extra or None)
    return qdq_path


def qdq_conv_model(path, *, x_scale, x_zp, w_q, w_scale, b_q, y_scale, y_zp, in_shape,
                   group=1, pads=(0, 0, 0, 0), strides=(1, 1), relu=False, w_zp=None,
                   b_scale=None, act_type=None):
    """Write a hand-made QDQ model in ONNX Runtime's layout: input → QuantizeLinear →
    DequantizeLinear → Conv (int8 weight ``w_q`` with per-channel ``w_scale`` and zero point
    ``w_zp`` (default 0), int32 bias ``b_q`` with scale ``b_scale`` (default x_scale·w_scale))
    → [Relu] → QuantizeLinear → DequantizeLinear → output. ``act_type``: the activations'
    integer type (default int8). Returns ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = w_q.shape[0]
    act = np.dtype(act_type or np.int8)
    w_scale = np.asarray(w_scale, np.float32)
    if b_scale is None:
        b_scale = np.float32(x_scale) * w_scale
    inits = [
        numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(x_zp, act), "x_zp"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(y_zp, act), "y_zp"),
        numpy_helper.from_array(np.asarray(w_q, np.int8), "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(m, np.int8) if w_zp is None
                                else np.asarray(w_zp, np.int8), "w_zp"),
        numpy_helper.from_array(np.asarray(b_q, np.int32), "b_q"),
        numpy_helper.from_array(np.asarray(b_scale, np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(m, np.int32), "b_zp"),
    ]
    conv_out = "h" if relu else "y_f"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq",
                         axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="b_dq",
                         axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], [conv_out], name="conv", group=group,
                         kernel_shape=list(w_q.shape[2:]), pads=list(pads),
                         strides=list(strides)),
    ]
    if relu:
        nodes.append(helper.make_node("Relu", ["h"], ["y_f"], name="relu"))
    nodes += [
        helper.make_node("QuantizeLinear", ["y_f", "y_scale", "y_zp"], ["y_q"], name="y_q"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"], name="y_dq"),
    ]
    graph = helper.make_graph(
        nodes, "qdq_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
