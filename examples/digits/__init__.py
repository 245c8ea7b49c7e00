"""The bundled digits example (``net.py``: the network, ``train.py``: its training)."""

import os

__all__ = ["NET"]

#: Path of ``net.py``, the NET every ``cnnforge`` subcommand takes for the digits example.
NET = os.path.join(os.path.dirname(os.path.realpath(__file__)), "net.py")
