"""The simulation harness's pieces that need no simulator: the probability thresholds of the
random source and sink, the batch size and its validation, the clock wrapper and the Verilator
configuration (the harness itself runs in every Verilator test of the accelerator, and
``tests/sim/test_accelerator_rtl.py`` breaks it on purpose to show the checker catches it)."""

import pytest

from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim.harness import (HARNESS, INPUTS, MEMORY_BUDGET, WRAPPER, SimHarness,
                                  clock_wrapper, probability_threshold, public_config)
from cnnforge.sim.rtl import debug_stream_size
from tests.helpers import compile_tight, conv_net


def harness(program, **kwargs):
    """A harness that is inspected, never elaborated (no "never used" warning)."""
    out = SimHarness(program, **kwargs)
    out._MustUse__silence = True
    return out


@pytest.fixture(scope="module")
def program():
    return compile_tight(quantize(conv_net(3)), 2, 2)


@pytest.mark.parametrize("p, threshold", [(0, 0), (0.5, 32768), (0.3, 19661),
                                          (1 - 2 ** -17, 65535), (2 ** -18, 0)])
def test_probability_threshold(p, threshold):
    assert probability_threshold(p) == threshold


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_probability_threshold_refuses(p):
    with pytest.raises(ValueError, match="is not a probability in"):
        probability_threshold(p)


def test_batch(program):
    per_image = program.image_size + program.output_size + debug_stream_size(program)
    assert harness(program).batch == min(256, MEMORY_BUDGET // per_image)
    assert harness(program, batch=1).batch == 1
    for bad in (0, 1 << 16):
        with pytest.raises(ValueError, match="give 1 to 65535 images"):
            SimHarness(program, batch=bad)


def test_wrapper_and_config(program):
    top = harness(program, batch=2)
    text = clock_wrapper(top)
    assert f"module {WRAPPER};" in text and f"{HARNESS} harness (" in text
    assert "reg [31:0] drop_beat = 32'd4294967295;" in text    # the ports' initial values
    assert "reg rst = 1'b1;" in text
    assert "wire rst = 1'b0;" in clock_wrapper(top, reset=False)
    config = public_config(top)
    for name in INPUTS + ("served", "image", "debug_taken"):
        assert f'-module "{WRAPPER}" -var "{name}"' in config
    assert '-var "clk"' not in config and '-var "rst"' not in config
    assert f'-module "{HARNESS}" -var "debug_mem"' in config
