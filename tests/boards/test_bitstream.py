"""Bitstreams for the iCEBreaker and the ULX3S through ``cnnforge build`` (amaranth's build with
the YoWASP yosys, nextpnr, icepack and ecppack): the files exist and look like bitstreams, and
the digits accelerator placed and routed in them (the real synthesis and place-and-route of the
UP5K and of an ECP5 in the test suite) fits, has its PE multipliers on DSP blocks, its weights and
feature maps in block RAM, and meets the board's clock.

Slow: a whole synthesis, place-and-route and packing per board. The two builds run as two
processes at once (each tool is single-threaded), so the pair costs about the time of the
longer one.
"""

import json
import re
import subprocess

import pytest

from cnnforge.boards.icebreaker import ICEBreakerTop, SPEC
from cnnforge.boards.pll import ecp5_pll, ice40_pll
from cnnforge.hw.compiler.devices import DEVICES

from . import CNNFORGE, digits_net

BOARDS = {"icebreaker": ("up5k", "bin", b"\x7e\xaa\x99\x7e"),   # iCE40 sync word
          "ulx3s-25f": ("lfe5u-25f", "bit", b"\xff\x00")}       # ECP5: comment block start


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("bitstreams")
    procs = {}
    for board in BOARDS:
        procs[board] = subprocess.Popen(
            [CNNFORGE, "build", digits_net(), "--board", board, "--build-dir", str(root),
             "--json", str(root / f"{board}.json")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {}
    for board, proc in procs.items():
        output, _ = proc.communicate(timeout=3600)
        report = root / f"{board}.json"
        out[board] = (proc.returncode, output, json.loads(report.read_text())
                      if report.is_file() else None, root)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("board", list(BOARDS))
def test_bitstream(builds, board):
    device, suffix, magic = BOARDS[board]
    dev = DEVICES[device]
    returncode, output, report, root = builds[board]
    assert returncode == 0 and report is not None, output[-3000:]
    path = root / board / f"top.{suffix}"
    assert report["bitstream"] == str(path) and path.is_file()
    data = path.read_bytes()
    assert len(data) > 50_000 and magic in data[:4096]
    # fits, meets the board's clock
    assert 0 < report["luts"] <= report["luts_total"] == dev.luts
    assert report["fmax_mhz"] >= report["core_mhz"]
    # the PEs' and the requantizer's multiplies are DSP-block instances (MULT18X18D, SB_MAC16:
    # their registers; on iCE40 two PEs a block), so none of theirs is left for yosys to map;
    # the requantizer's four partial products in four blocks, or time-shared over two where
    # the array takes the others (the iCEBreaker's 4x3)
    rows, cols = report["array"]
    assert not any(m["src"].startswith(("hw/rtl/pe_array.py", "hw/rtl/ppu.py"))
                   for m in report["multipliers"])
    pe_blocks = dev.pe_dsps(rows, cols)
    ppu_blocks = 4 if dev.ppu_interval(rows, cols) == 1 else 2
    assert pe_blocks + ppu_blocks <= report["dsps"] <= report["dsps_total"] == dev.dsps
    # weights and feature maps in block RAM; the tile buffers and the image buffer too on
    # iCE40, in block or LUT RAM on ECP5; whatever is not in block RAM is named in a note
    # (ECP5: the weight ROM, a large feature map and the image buffer in banks: weights.bank0,
    # fm.bank0, image0, ...)
    where = {re.sub(r"\.bank\d+$", "", m["memory"]).split(".")[-1]: m["mapped"]
             for m in report["memories"]}
    assert where["weights"] == where["fm"] == "block RAM", report["memories"]
    small = [v for k, v in where.items() if k.startswith(("image", "ibuf"))]
    allowed = {"block RAM"} if dev.family == "ice40" else {"block RAM", "LUT RAM"}
    assert small and set(small) <= allowed, report["memories"]
    for mem in report["memories"]:
        if mem["mapped"] != "block RAM":
            assert any(mem["memory"] in note for note in report["notes"])
    assert 0 < report["bram"] <= report["bram_total"] == dev.bram


def test_pll_settings():
    """The PLL settings the board tops use land on the intended clocks."""
    p = ice40_pll(12e6, 48e6)
    assert (p.divr, p.divf, p.divq, p.f_out) == (0, 63, 4, 48e6)
    assert ICEBreakerTop(None, SPEC).pll.f_out == SPEC.core_mhz * 1e6
    e = ecp5_pll(25e6, 100e6)
    assert e.f_out == 100e6 and 400e6 <= e.f_out * e.clkop_div <= 800e6
    with pytest.raises(ValueError, match="cannot make"):
        ice40_pll(12e6, 1e6)


def test_unreachable_clock_is_one_line(tmp_path):
    proc = subprocess.run([CNNFORGE, "build", digits_net(), "--board", "icebreaker", "--clock",
                           "7", "--build-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("cnnforge: error: icebreaker at 7 MHz: the iCE40 PLL cannot "
                                   "make 7 MHz from 12 MHz")
