"""What the ``cnnforge`` subcommands share: the user-error type, atomic file writes, loading NET
with ``--calibration``, and the NET and ``--calibration`` arguments.

:mod:`cnnforge.hw.tools.cli`, :mod:`cnnforge.hw.tools.explore` and
:mod:`cnnforge.hw.tools.board_commands` import these from here, so the command line imports the
subcommand modules and none of them imports it back.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.models.perf import network_model

__all__ = ["UserError", "atomic_write", "load_calibrated", "read_inputs", "warn", "preflight",
           "NET_HELP",
           "INPUTS_HELP", "add_calibration_option"]

#: Help text of every subcommand's NET argument.
NET_HELP = "network: a Python file defining `network`, an .onnx model or an int8 .tflite model"
#: Simulated cycles per second :func:`preflight` assumes (the Verilator harness with the
#: per-layer check measured 0.39 M (VWW, 8x8) to 1.5 M (digits) on a loaded 2-core machine,
#: benchmarks/sim_speed.py).
SIM_CYCLES_PER_SECOND = 400_000
#: Longest simulation :func:`preflight` lets start without ``--force`` (seconds).
MAX_SIM_SECONDS = 3600
#: Most weights :func:`preflight` lets elaborate without ``--force``: the weight ROM is
#: elaborated as constant memory contents, about 1.2 GB of memory and 40 s per million weights.
MAX_WEIGHTS = 2_000_000
#: Fraction of saturated int8 input values above which ``read_inputs`` warns.
SATURATION_WARNING = 0.05
#: Help text of ``--inputs``.
INPUTS_HELP = ("inputs .npy in the network's own layout: (N, C, H, W) for a Python or ONNX "
               "network, (N, H, W, C) for a TFLite model; int8 values are used as they are, "
               "float values quantized with the input's scale and zero point")


class UserError(Exception):
    """An error in what the user asked for: reported on one line, exit status 2."""


def atomic_write(path, write):
    """Write a file through a temporary in the same folder, renamed into place when complete.

    Parameters
    ----------
    path : path-like
        The file to write (its folder is created).
    write : callable
        Called with the temporary's path; writes the content there. If it raises, the
        temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())        # as open() would create it (mkstemp: 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask():
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_calibrated(net, calibration=None):
    """``load_network(net)`` with ``--calibration`` attached as ``network.calibration``.

    Parameters
    ----------
    net : path-like
        NET: a Python network file or an ONNX model.
    calibration : path-like, optional
        A float32 .npy of shape (N, C, H, W).

    Returns
    -------
    Sequential

    Raises
    ------
    UserError
        If the calibration data cannot be read or has the wrong shape, or for a float ONNX
        model without calibration data (a QDQ model carries its own scales and ignores it).
    """
    network = load_network(net)
    if calibration:
        try:
            data = np.load(calibration)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{calibration}: cannot read calibration data ({exc})") from None
        if data.ndim != 4 or data.shape[1:] != network.input_shape or not len(data):
            raise UserError(f"{calibration}: calibration data has shape {data.shape}, the "
                            f"network expects (N, {', '.join(map(str, network.input_shape))})")
        _check_finite(data, calibration, "calibration data")
        network.calibration = data.astype(np.float32)
    elif (str(net).endswith(".onnx") and getattr(network, "quantized", None) is None
          and network.calibration is None):
        raise UserError(f"{net}: a float ONNX model needs calibration data: "
                        "--calibration FILE.npy")
    data = network.calibration
    if getattr(network, "quantized", None) is None and data is not None and data.size:
        _check_finite(data, calibration or net, "calibration data")
        if float(data.max()) - float(data.min()) < 1e-6:
            warn(f"{calibration or net}: calibration data has a zero range (every value "
                 f"{float(data.min()):g}): the input scale becomes about 1e-8 and every other "
                 "input saturates")
    return network


def warn(message):
    """One line on stderr: ``cnnforge: warning: ...``."""
    print(f"cnnforge: warning: {message}", file=sys.stderr)


def _check_finite(data, path, what):
    """UserError naming ``path`` and the first NaN or infinite value of float ``data``."""
    data = np.asarray(data)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
        raise UserError(f"{path}: {what} holds {data[index]} at index {index}; give finite "
                        "values")


def read_inputs(path, qnet):
    """Read ``--inputs`` (a .npy in the network's own layout, see
    :meth:`~cnnforge.hw.frontend.quantize.QuantizedNetwork.model_input`).

    Returns
    -------
    ndarray
        The array as read, with a batch axis.

    Raises
    ------
    UserError
        If the file cannot be read or its shape or dtype does not fit the network.
    """
    try:
        x = np.load(path)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: cannot read inputs ({exc})") from None
    _check_finite(x, path, "inputs")
    try:
        qnet.model_input(x)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    if x.dtype != np.int8:
        level = np.asarray(x, np.float64) / qnet.input_scale + qnet.input_zero_point
        saturated = float(np.mean((level < -128.5) | (level > 127.5)))
        if saturated > SATURATION_WARNING:
            lo = (-128 - qnet.input_zero_point) * qnet.input_scale
            hi = (127 - qnet.input_zero_point) * qnet.input_scale
            warn(f"{path}: {saturated:.1%} of the input values saturate int8 (values "
                 f"{float(x.min()):g}..{float(x.max()):g}; the input scale "
                 f"{qnet.input_scale:.4g} and zero point {qnet.input_zero_point} cover "
                 f"{lo:.4g}..{hi:.4g})")
    return x if x.shape != qnet.model_input_shape else x[None]


def cores():
    """Processor cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:                      # not on every platform
        return os.cpu_count() or 1


def preflight(program, images=None, force=False, workers=1):
    """Refuse, before elaboration, a design whose Verilog or simulation would run away.

    From the compiled program alone (the analytic model and the weight count): more than
    :data:`MAX_WEIGHTS` weights (elaboration memory), or, for ``images`` to simulate over
    ``workers`` simulator processes, more than :data:`MAX_SIM_SECONDS` of simulation at
    :data:`SIM_CYCLES_PER_SECOND` each (``workers=None``: a cluster of unknown size, the time
    is not checked).

    Raises
    ------
    UserError
        One line with the figures and the layer that dominates, unless ``force``.
    """
    per_layer = [sum(int(op.weight.size) for op in layer.ops if op.weight is not None)
                 for layer in program.layers]
    weights = sum(per_layer)
    if weights > MAX_WEIGHTS and not force:
        big = program.layers[int(np.argmax(per_layer))]
        raise UserError(f"{weights:,} weights (layer {big.name} ({big.type}) holds the most) "
                        f"would take about {weights / 1e6 * 1.2:.0f} GB and "
                        f"{weights / 1e6 * 40 / 60:.0f} min to elaborate; the limit is "
                        f"{MAX_WEIGHTS:,}: --force goes on anyway")
    if not images or workers is None:
        return
    models, per_image = network_model(program)
    seconds = per_image * -(-images // workers) / SIM_CYCLES_PER_SECOND
    if seconds > MAX_SIM_SECONDS and not force:
        layer, model = max(zip(program.layers, models), key=lambda pair: pair[1].cycles)
        raise UserError(f"the simulation would take about {seconds / 3600:.1f} h: the model "
                        f"predicts {per_image:,} cycles per image (layer {layer.name} "
                        f"({layer.type}): {model.cycles:,}) x {images} images at about "
                        f"{SIM_CYCLES_PER_SECOND:,} cycles/s"
                        + (f" in each of {workers} processes" if workers > 1 else "")
                        + "; --force runs it anyway")


def add_calibration_option(p):
    """Add ``--calibration FILE.npy`` to parser ``p``, for every command that quantizes a
    network."""
    p.add_argument("--calibration", metavar="FILE.npy", help="float32 inputs (N, C, H, W) to "
                   "calibrate the quantizer on (needed by a float ONNX model; replaces a "
                   "Python network's own)")
