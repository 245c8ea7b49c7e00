"""``cnnforge synth``'s report: where multipliers and memories go, and why (from yosys' dump and
log), and the command line's errors. The real synthesis and place-and-route of the digits
accelerator for the UP5K and an ECP5 run in ``tests/boards/test_bitstream.py`` (the same yosys and
nextpnr flow, ending in bitstreams), which keeps ``make test`` within its time budget."""

import subprocess

from cnnforge.hw.synth import (DEVICES, SynthReport, _memories, _multipliers, _parse_dump,
                               _rtlil_memories)

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
  attribute \\src "/x/hw/pe_array.py:92"
  cell $mul $1
    parameter \\A_WIDTH 8
    parameter \\B_WIDTH 8
    parameter \\Y_WIDTH 16
  end
  attribute \\src "/x/hw/accelerator.py:420"
  cell $mul $2
    parameter \\A_WIDTH 16
    parameter \\B_WIDTH 5
    parameter \\Y_WIDTH 9
  end
"""
    muls = _multipliers(_parse_dump(dump), DEVICES["up5k"])
    assert muls[0]["mapped"] == "1 SB_MAC16" and muls[0]["src"] == "hw/pe_array.py:92"
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
