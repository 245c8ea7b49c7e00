"""Loading a network from a file: a Python file defining ``network``, an ONNX model, or an int8
TFLite model.

:func:`load_network` is what the tools, the benchmarks and the tests call with a path; it sits
above both :mod:`cnnforge.hw.frontend.network` (the layers) and
:mod:`cnnforge.hw.frontend.onnx_import` (which builds those layers), so neither imports the
other back.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from cnnforge.hw.frontend.network import NetworkError, Sequential
from cnnforge.hw.frontend.onnx_import import load_onnx
from cnnforge.hw.frontend.tflite_import import load_tflite

__all__ = ["load_network"]


def load_network(path):
    """Import the Python file ``path`` and return its module-level ``network``, or import the
    ONNX model ``path`` (a name ending in ``.onnx``) or the TFLite model ``path`` (``.tflite``).

    A Python file defines ``network`` (a :class:`~.network.Sequential` with weights loaded)
    and may define ``calibration`` (float32 inputs, shape (B, C, H, W)) and ``test_data()``
    returning ``(inputs, labels)``; they are attached to the returned network as
    ``network.calibration`` and ``network.test_data``. An ONNX model goes through
    :func:`cnnforge.hw.frontend.onnx_import.load_onnx` (``network.calibration`` and
    ``network.test_data`` are ``None``; a QDQ model's quantization is ``network.quantized``), a
    TFLite model (``.tflite``) through :func:`cnnforge.hw.frontend.tflite_import.load_tflite`
    (its quantization is ``network.quantized``).
    ``network.source`` is ``path``.

    Raises
    ------
    NetworkError
        If the file is missing, fails to import, defines no ``network``, or is an ONNX model
        cnnforge cannot import (the message names the node).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NetworkError(f"{path}: no such network file")
    if path.endswith((".onnx", ".tflite")):
        network = load_onnx(path) if path.endswith(".onnx") else load_tflite(path)
        network.source = path
        network.test_data = None
        return network
    spec = importlib.util.spec_from_file_location(
        "cnnforge_net_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except NetworkError as exc:
        raise NetworkError(f"{path}: {exc}") from None
    except Exception as exc:  # a user's file may raise anything; report it on one line
        raise NetworkError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from None
    network = getattr(module, "network", None)
    if not isinstance(network, Sequential):
        raise NetworkError(f"{path}: defines no module-level `network` (a cnnforge Sequential)")
    if network.calibration is None and getattr(module, "calibration", None) is not None:
        network.calibration = np.asarray(module.calibration, np.float32)
    network.test_data = getattr(module, "test_data", None)
    network.source = path
    network.check_loaded()
    return network
