"""Gate-level simulation: the netlist yosys builds for the iCEBreaker's UP5K (``synth_ice40
-dsp -abc9 -dff``: LUTs, carry chains, SB_MAC16 DSP blocks and SB_RAM40_4K block RAMs) on Verilator with
yosys' own cell models, against the golden model, bit for bit, on real digits.

The RTL tests check what Amaranth describes; this one checks what goes into the bitstream. It
exists because the two differed: yosys' iCE40 DSP mapper once tied the requantizer's low partial
product to constant 0 (see ``tests/test_synth.py``), which every RTL test passed.
"""

import numpy as np
import pytest

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.tools.board_commands import _program
from cnnforge.sim import runner
from cnnforge.sim.accel import AcceleratorSim, compare

from .test_accelerator_rtl import DIGITS


@pytest.mark.slow
def test_ice40_netlist_classifies_digits():
    device = DEVICES["up5k"]
    program, _ = _program(str(DIGITS), device, device.rows, device.cols, 4096, device.algorithm)
    network = load_network(DIGITS)
    x, _ = network.test_data()
    images = program.qnet.quantize_input(x[:3])
    sim = AcceleratorSim(program, runner.build_root() / "test" / "netlist-up5k", netlist="ice40")
    result = sim.build().run(images)
    _, mismatches = compare(program, images, result)
    assert mismatches == {"logits": 0, "layers": {layer.name: 0 for layer in program.layers}}
    assert np.all(result.cycles > 0)

