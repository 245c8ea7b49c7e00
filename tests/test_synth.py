"""``cnnforge synth``'s report: where multipliers and memories go, and why (from yosys' dump and
log), and the command line's errors. The real synthesis and place-and-route of the digits
accelerator for the UP5K and an ECP5 run in ``tests/boards/test_bitstream.py`` (the same yosys and
nextpnr flow, ending in bitstreams), which keeps ``make test`` within its time budget."""

import subprocess

import pytest

from cnnforge.hw.rtl.ppu import PostProcessor
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.boards.synth import (SynthError, SynthReport, _count, _memories,
                               _multipliers, _parse_dump, _rtlil_memories, _stat_cells,
                               check_yosys_log, tool_path)
from cnnforge.sim.golden import ROUNDINGS

from .boards import CNNFORGE, digits_net

KEYS = {"device", "luts", "luts_total", "dsps", "dsps_total", "bram", "bram_total", "fmax_mhz",
        "fits"}


def test_json_keys():
    """The documented keys; spram only for iCE40."""
    ice = SynthReport(device="up5k", part="", design="", array=[2, 2], spram_total=4).to_json()
    ecp = SynthReport(device="lfe5u-85f", part="", design="", array=[8, 8]).to_json()
    assert KEYS | {"spram", "spram_total"} <= set(ice)
    assert KEYS <= set(ecp) and "spram" not in ecp and "spram_total" not in ecp


def test_multiplier_and_memory_reasons():
    """The report names what stays in logic, and why (from yosys' dump and log lines)."""
    dump = """
  attribute \\src "/x/hw/rtl/pe_array.py:92"
  cell $mul $1
    parameter \\A_WIDTH 8
    parameter \\B_WIDTH 8
    parameter \\Y_WIDTH 16
  end
  attribute \\src "/x/hw/rtl/accelerator.py:420"
  cell $mul $2
    parameter \\A_WIDTH 16
    parameter \\B_WIDTH 5
    parameter \\Y_WIDTH 9
  end
"""
    muls = _multipliers(_parse_dump(dump), DEVICES["up5k"])
    assert muls[0]["mapped"] == "1 SB_MAC16" and muls[0]["src"] == "hw/rtl/pe_array.py:92"
    assert muls[1]["mapped"] == "logic" and "11 bits" in muls[1]["reason"]
    assert _multipliers(_parse_dump(dump), DEVICES["lfe5u-85f"])[0]["mapped"] == "1 MULT18X18D"
    sizes = {"top.link.accel.descriptors": (3, 300)}
    log = ("mapping memory top.link.accel.weights via $__ICE40_RAM4K_\n"
           "using FF mapping for memory top.link.accel.descriptors\n")
    mems = _memories(sizes, log, DEVICES["up5k"])
    assert mems[0] == {"memory": "link.accel.weights", "depth": 0, "width": 0,
                       "mapped": "block RAM", "reason": ""}
    assert mems[1]["mapped"] == "logic" and mems[1]["depth"] == 3 and mems[1]["width"] == 300
    assert "too small" in mems[1]["reason"]


def test_rtlil_memory_sizes():
    il = "module \\top.link\n  memory width 8 size 64 \\image\nend\n"
    assert _rtlil_memories(il) == {"top.link.image": (64, 8)}


def test_unknown_device_is_one_line():
    proc = subprocess.run([CNNFORGE, "synth", digits_net(), "--device", "xc7a35t"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ------------------------------------------------------------------------------------------------
# yosys' iCE40 DSP mapper: a netlist it builds wrongly is refused, and the post-processor's
# multiplier is written so that it is not built wrongly

# A 32×31 product split into 16×16 partial products between registers, summed as the
# post-processor did: a 33-bit sum of two products and a plain delay register after a product.
# synth_ice40 -dsp absorbs both into SB_MAC16s and ties the delayed product and the sum's carry
# to constants ("Driver-driver conflict ... Resolved using constant").
MISMAPPED = """
module top(input clk, input [31:0] x, input [30:0] m, output reg [49:0] low);
  reg [31:0] xr; reg [30:0] mr; reg [31:0] pll, phl; reg [30:0] plh;
  reg [32:0] mid; reg [31:0] lo;
  always @(posedge clk) begin
    xr <= x; mr <= m;
    pll <= xr[15:0] * mr[15:0]; plh <= xr[15:0] * mr[30:16]; phl <= xr[31:16] * mr[15:0];
    mid <= plh + phl; lo <= pll;
    low <= lo + (mid << 16);
  end
endmodule
"""


def _synth_ice40(tmp_path, read):
    script = tmp_path / "synth.ys"
    script.write_text(f"{read}\nsynth_ice40 -dsp -top top\ntee -q -o stat.json stat -json\n")
    subprocess.run([tool_path("yosys"), "-q", "-l", "yosys.log", "synth.ys"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=600)
    return tmp_path / "yosys.log"


def test_mismapped_netlist_is_refused(tmp_path):
    (tmp_path / "top.v").write_text(MISMAPPED)
    log = _synth_ice40(tmp_path, "read_verilog top.v")
    with pytest.raises(SynthError) as err:
        check_yosys_log(log)
    message = str(err.value)
    assert "\n" not in message and "33 driven bit(s)" in message and "mid [32]" in message


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_post_processor_maps_cleanly_on_ice40(tmp_path, rounding):
    """The requantizer's four partial products each take an SB_MAC16, and yosys ties nothing
    to a constant (every sum after a product is wider than a DSP accumulator)."""
    from amaranth.back import rtlil

    params = [{"bias": 5, "multiplier": (1 << 30) + 12345, "shift": 3}] * 4
    (tmp_path / "ppu.il").write_text(rtlil.convert(PostProcessor(32, params, 10, rounding),
                                                   name="top"))
    check_yosys_log(_synth_ice40(tmp_path, "read_rtlil ppu.il"))
    assert _count(_stat_cells(tmp_path / "stat.json"), ["SB_MAC16"]) == 4
