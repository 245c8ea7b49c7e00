"""The runner's own contract (``sim/formal.py``): arguments checked before anything runs."""

import pytest
from amaranth.hdl import Module

from cnnforge.sim.formal import run_formal


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "live"}, r"mode must be one of bmc, prove, cover, got 'live'"),
    ({"depth": 0}, r"depth must be at least 1 step, got 0"),
])
def test_rejects(kwargs, message):
    harness = Module()
    harness._MustUse__silence = True            # refused before it is elaborated
    with pytest.raises(ValueError, match=message):
        run_formal(harness, **kwargs)
