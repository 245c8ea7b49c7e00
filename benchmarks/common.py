"""Helpers the benchmark scripts share (imported as ``common``: a script's own folder is on
``sys.path`` when it runs as ``python benchmarks/<name>.py``)."""

import importlib.metadata as md
import os
import platform

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def machine_info(*dists):
    """Python, platform, CPU count, load average and the versions of ``dists`` (installed
    distributions), for a results JSON."""
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for dist in dists:
        try:
            info[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return info


def compact_count(n):
    """Compact count for tables: 1234 -> 1.2k, 12345 -> 12k, 1234567 -> 1.23M; None -> "-"."""
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.0f}k"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def tflm(path, xs):
    """TensorFlow Lite Micro's outputs (its reference kernels) for the model file ``path``, one
    invoke per input of ``xs`` (int8, the model's layout)."""
    interpreter = runtime.Interpreter.from_file(str(path))
    out = []
    for x in xs:
        interpreter.set_input(x[None], 0)
        interpreter.invoke()
        out.append(np.array(interpreter.get_output(0), copy=True))
    return np.concatenate(out)
