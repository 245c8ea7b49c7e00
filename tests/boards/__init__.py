"""Tests of the boards package: UART, protocol, host link top, synthesis, bitstreams, flashing."""

import sys
from pathlib import Path

CNNFORGE = str(Path(sys.executable).parent / "cnnforge")
"""The console script (run as a subprocess, the way a user runs it)."""


def digits_net():
    """Path of the bundled digits network file."""
    import cnnforge.examples.digits as digits
    return str(Path(digits.__file__).resolve().parent / "net.py")
