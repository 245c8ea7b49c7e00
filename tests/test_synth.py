"""``cnnforge synth``'s report: where multipliers and memories go, and why (from yosys' dump and
log), the placer seeds' median and the critical path, and the command line's errors. The real
synthesis and place-and-route of the digits accelerator for the UP5K and an ECP5 run in
``tests/boards/test_bitstream.py`` (the same yosys and nextpnr flow, ending in bitstreams), which
keeps ``make test`` within its time budget; here only ``--seeds 2`` on the UP5K (slow)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from distributed import LocalCluster

from cnnforge.hw.rtl.common import NO_RW_CHECK, ice40_product_pair, product_register
from cnnforge.hw.rtl.pe_array import ProcessingElement
from cnnforge.hw.rtl.ppu import PostProcessor
from cnnforge.hw.rtl.tile_buffer import TileBuffer
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.boards.synth import (SynthError, SynthReport, _count, cell_models,
                                   _critical_path, _memories, _multipliers, _parse_dump,
                                   _place_seeds, _rtlil_memories, _stat_cells, check_yosys_log,
                                   median_seed, seed_summary, tool_path, undefined_collisions)
from cnnforge.hw.tools.board_commands import seeds_line
from cnnforge.sim.golden import ROUNDINGS

from .boards import CNNFORGE, digits_net

MLPERF = Path(__file__).resolve().parent.parent / "examples" / "mlperf_tiny"
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
    assert muls[0]["src"] == "hw/rtl/pe_array.py:92"
    assert all(m["mapped"] == "logic" and "without -dsp" in m["reason"] for m in muls)
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


@pytest.mark.parametrize("option", [["--seeds", "0"], ["--seeds", "-3"], ["--workers", "0"]])
def test_bad_seed_counts_are_one_line(option):
    proc = subprocess.run([CNNFORGE, "synth", digits_net(), "--device", "up5k", *option],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"cnnforge: error: {option[0]} must be at least 1, "
                                   f"not {option[1]}")


def test_memory_that_does_not_fit_is_refused_before_yosys(tmp_path):
    """The visual-wake-words model on the UP5K (too big even with SPRAM: its largest map does not
    fit a 32 KB block): refused in one line naming the memory, before yosys runs (nothing is
    written to the build folder)."""
    vww = MLPERF / "vww_96_int8.tflite"
    for command in (["synth", str(vww), "--device", "up5k"],
                    ["build", str(vww), "--board", "icebreaker"]):
        proc = subprocess.run([CNNFORGE, *command, "--build-dir", str(tmp_path / "b")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        err = proc.stderr.strip()
        assert err.count("\n") == 0 and err.startswith("cnnforge: error: feature map: ")
        assert "up5k has 30 (15 KB)" in err and err.endswith("; --force tries anyway")
        assert "not in SPRAM: SPRAM feature maps: the largest map (36,864 values)" in err
        assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------
# placer seeds and the critical path

def test_peak_int8_macs():
    """Two int8 products per DSP block: 8 SB_MAC16, 28 and 156 MULT18X18D."""
    assert [DEVICES[k].peak_int8_macs for k in ("up5k", "lfe5u-25f", "lfe5u-85f")] == [16, 56,
                                                                                        312]


def test_median_seed():
    """The median of an odd count; the lower middle one of an even count (an Fmax a placement
    reached); a failed run ranks below every Fmax; ties go to the smaller seed."""
    assert median_seed({1: 30.0, 2: 31.5, 3: 29.0}) == 1
    assert median_seed({1: 30.0, 2: 31.5}) == 1
    assert median_seed({4: 31.5, 5: 30.0, 6: 29.0, 7: 33.0}) == 5
    assert median_seed({1: None, 2: 31.0, 3: 32.0}) == 2
    assert median_seed({1: None, 2: None, 3: 32.0}) == 2
    assert median_seed({3: 30.0, 1: 30.0, 2: 30.0}) == 2
    assert median_seed({7: 12.5}) == 7
    with pytest.raises(ValueError):
        median_seed({})


def test_seed_summary():
    """Min and max over the seeds that placed, the median seed's Fmax as the median."""
    assert seed_summary({3: 31.9, 1: 31.4, 2: 30.1}) == {
        "seed": 1, "fmax_mhz_by_seed": {1: 31.4, 2: 30.1, 3: 31.9}, "fmax_mhz_min": 30.1,
        "fmax_mhz_median": 31.4, "fmax_mhz_max": 31.9}
    failed = seed_summary({1: None, 2: None, 3: 99.0})
    assert failed["seed"] == 2 and failed["fmax_mhz_median"] is None
    assert failed["fmax_mhz_min"] == failed["fmax_mhz_max"] == 99.0
    assert seed_summary({1: None})["fmax_mhz_min"] is None


def _step(kind, delay, src, dst, port="I0"):
    return {"type": kind, "delay": delay, "from": {"cell": src, "port": port},
            "to": {"cell": dst}}


def test_critical_path_levels():
    """The worst register-to-register path (not the first listed, not one from an input pin):
    its ends, the cells it goes through (logic steps), logic and routing delays."""
    clk = "posedge clk"
    short = [_step("clk-to-q", 1.0, "a", "a"), _step("routing", 2.0, "a", "b"),
             _step("setup", 0.5, "b", "b")]
    long = [_step("clk-to-q", 1.4, "ctr", "ctr"), _step("routing", 5.0, "ctr", "lut1"),
            _step("logic", 1.3, "lut1", "lut1"), _step("routing", 1.8, "lut1", "lut2"),
            _step("logic", 0.9, "lut2", "lut2"), _step("routing", 1.8, "lut2", "ff"),
            _step("setup", 0.5, "ff", "ff")]
    pin = [_step("source", 0.0, "rx", "rx"), _step("routing", 40.0, "rx", "ff"),
           _step("setup", 0.5, "ff", "ff")]
    data = {"critical_paths": [{"from": clk, "to": clk, "path": short},
                               {"from": "<async>", "to": clk, "path": pin},
                               {"from": clk, "to": clk, "path": long}]}
    assert _critical_path(data) == [{"from": "ctr", "to": "ff", "levels": 2, "carry_steps": 0,
                                     "delay_ns": 12.7, "logic_ns": 4.1, "routing_ns": 8.6,
                                     "steps": 7}]
    # an ECP5 adder: a block RAM into a carry chain (entered on B, then FCI -> FCO, dedicated
    # wires of no delay) into a LUT: two levels (the chain and the LUT), whatever the chain's
    # length
    adder = [_step("clk-to-q", 5.6, "rom", "rom", "DOA2"), _step("routing", 2.0, "rom", "c0"),
             _step("logic", 0.45, "c0", "c0", "B"), _step("routing", 0.0, "c0", "c1", "FCO"),
             _step("logic", 0.0, "c1", "c1", "FCI"), _step("routing", 0.0, "c1", "c2", "FCO"),
             _step("logic", 0.07, "c2", "c2", "FCI"), _step("routing", 0.5, "c2", "lut"),
             _step("logic", 0.2, "lut", "lut", "D"), _step("routing", 0.4, "lut", "ff"),
             _step("setup", 0.1, "ff", "ff")]
    found = _critical_path({"critical_paths": [{"from": clk, "to": clk, "path": adder}]})[0]
    assert (found["levels"], found["carry_steps"], found["steps"]) == (2, 2, 11)
    only_pin = {"critical_paths": [{"from": "<async>", "to": clk, "path": pin}]}
    assert _critical_path(only_pin)[0]["levels"] == 0
    assert _critical_path({}) == [] and _critical_path({"critical_paths": [{"path": []}]}) == []


def test_seeds_line():
    report = SynthReport(device="up5k", part="", design="", array=[2, 2], seed=1,
                         fmax_mhz_by_seed={1: 30.04, 2: 31.5, 3: None}, fmax_mhz_min=30.04,
                         fmax_mhz_median=30.04, fmax_mhz_max=31.5)
    assert seeds_line(report) == ("Fmax over seeds 1..3: 30.0 / 30.0 / 31.5 MHz (min / median / "
                                  "max; 1: 30.0, 2: 31.5, 3: failed); the figures above are seed "
                                  "1's placement")
    report.fmax_mhz_by_seed = {1: None, 2: None}
    report.fmax_mhz_min = report.fmax_mhz_median = report.fmax_mhz_max = None
    assert seeds_line(report) == "nextpnr placed with no seed (1..2)"


TINY_NET = """
import numpy as np
from cnnforge.hw.frontend.network import Conv2d, Flatten, Linear, ReLU, Sequential

network = Sequential(Conv2d(1, 2, 3), ReLU(), Flatten(), Linear(32, 3), input_shape=(1, 6, 6))
rng = np.random.default_rng(0)
network.load_state_dict({k: rng.standard_normal(v).astype(np.float32) * 0.3
                         for k, v in network.state_dict_shapes().items()})
calibration = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
"""


@pytest.mark.slow
def test_two_seeds_on_up5k(tmp_path):
    """``--seeds 2`` (a small network's board core, so it places in seconds): one yosys run, two
    nextpnr runs side by side in their own folders; the report is the lower seed's by Fmax (the
    lower median), with both Fmax values, the critical path's logic levels and the memory
    plan."""
    net = tmp_path / "net.py"
    net.write_text(TINY_NET)
    out = tmp_path / "synth.json"
    proc = subprocess.run([CNNFORGE, "synth", str(net), "--device", "up5k", "--seeds", "2",
                           "--rows", "4", "--cols", "3",
                           "--seed", "5", "--workers", "2", "--clock", "12",
                           "--build-dir", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    by_seed = {int(k): v for k, v in report["fmax_mhz_by_seed"].items()}
    assert set(by_seed) == {5, 6} and all(v > 12 for v in by_seed.values())
    assert report["fmax_mhz_min"] == min(by_seed.values()) == report["fmax_mhz_median"]
    assert report["fmax_mhz_max"] == max(by_seed.values())
    assert report["fmax_mhz"] == by_seed[report["seed"]] == report["fmax_mhz_median"]
    assert report["fits"] and report["meets_clock"]
    # the 4x3 array's twelve int8 MACs a cycle (six SB_MAC16 in 8x8 mode, two left for the
    # time-shared requantizer) against the eight SB_MAC16s' sixteen
    assert (report["int8_macs_per_cycle"], report["peak_int8_macs_per_cycle"]) == (12, 16)
    # the memory plan travels with the report (its block RAMs an estimate of nextpnr's)
    assert report["memory"]["fits"] and abs(report["memory"]["kinds"]["EBR"]["used"]
                                            - report["bram"]) <= 1
    for seed in (5, 6):
        assert (tmp_path / f"seed{seed}" / "report.json").is_file()
    assert (tmp_path / "yosys.log").read_text().count("Executing SYNTH_ICE40 pass") == 1
    path = report["critical_path"][0]
    assert path["levels"] >= 1 and path["delay_ns"] == pytest.approx(1000 / report["fmax_mhz"],
                                                                      rel=0.05)
    printed = " ".join(proc.stdout.split())           # rich wraps the long lines
    assert "Fmax over seeds 5..6" in printed and f"{path['levels']} logic levels" in printed
    assert "int8 MACs per cycle" in printed and "12 of 16 (DSP peak)" in printed


COUNTER = """
module top(input clk, input en, output reg [15:0] count);
  always @(posedge clk) if (en) count <= count + 16'd1;
endmodule
"""


def test_seeds_on_dask(tmp_path):
    """``synth --dask``'s placement: a small iCE40 netlist placed with two seeds on a Dask
    cluster's worker processes gives each seed's Fmax of a local placement, every seed's files
    written back to its folder here."""
    (tmp_path / "top.v").write_text(COUNTER)
    subprocess.run([tool_path("yosys"), "-q", "-p", "synth_ice40 -top top; write_json top.json",
                    "top.v"], cwd=tmp_path, check=True, timeout=300)
    local, remote = tmp_path / "local", tmp_path / "remote"
    for folder in (local, remote):
        folder.mkdir()
        shutil.copy(tmp_path / "top.json", folder / "top.json")
    here, _ = _place_seeds("nextpnr-ice40", DEVICES["up5k"], 12, [5, 6], local, 2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        there, _ = _place_seeds("nextpnr-ice40", DEVICES["up5k"], 12, [5, 6], remote, 2,
                                dask=cluster.scheduler_address)
    assert all(r["rc"] == 0 and r["summary"]["fmax_mhz"] > 12 for r in here + there)
    assert ([(r["seed"], r["summary"]["fmax_mhz"]) for r in there]
            == [(r["seed"], r["summary"]["fmax_mhz"]) for r in here])
    for seed in (5, 6):
        assert "Max frequency" in (remote / f"seed{seed}" / "nextpnr.log").read_text()
        assert (remote / f"seed{seed}" / "report.json").is_file()


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


def _synth_ice40(tmp_path, read, opts="-dsp"):
    script = tmp_path / "synth.ys"
    script.write_text(f"{read}\nsynth_ice40 {opts} -top top\ntee -q -o stat.json stat -json\n")
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


@pytest.mark.parametrize("acc_width", [32, 20])
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("family", [None, "ice40"])
def test_post_processor_maps_cleanly_on_ice40(tmp_path, rounding, family, acc_width):
    """The requantizer's four partial products each take an SB_MAC16: instantiated (the
    board flow, without -dsp, the blocks kept as built), or a simulation build's multiplies
    mapped by ``synth_ice40 -dsp`` with nothing tied to a constant (every sum after a product
    is wider than a DSP accumulator); with int32's datapath and a network's narrower one (a
    20-bit accumulator: ``x`` 21 bits, its high half 5)."""
    params = [{"bias": 5, "multiplier": (1 << 30) + 12345, "shift": 3}] * 4
    ppu = PostProcessor(acc_width, params, 10, rounding, family=family)
    (tmp_path / "ppu.il").write_text(rtlil.convert(ppu, name="top"))
    opts = "" if family else "-dsp"
    check_yosys_log(_synth_ice40(tmp_path, "read_rtlil ppu.il", opts))
    assert _count(_stat_cells(tmp_path / "stat.json"), ["SB_MAC16"]) == 4


class _TwoBuffers(wiring.Component):
    """Two 1024-byte block RAMs, one write and one read port each; ``marked`` says which carry
    :data:`NO_RW_CHECK`."""

    addr: In(10)
    raddr: In(10)
    data: In(8)
    en: In(2)
    q: Out(8).array(2)

    def __init__(self, marked):
        self._marked = marked
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        for k in range(2):
            mem = memory.Memory(shape=8, depth=1024, init=[],
                                attrs=NO_RW_CHECK if self._marked[k] else {})
            m.submodules[f"mem{k}"] = mem
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.data), wr.en.eq(self.en[k]),
                         rd.addr.eq(self.raddr), self.q[k].eq(rd.data)]
        return m


@pytest.mark.parametrize("marked", [(False, False), (True, False), (True, True)])
def test_undefined_collisions_leave_bare_block_rams(tmp_path, marked):
    """A memory marked ``no_rw_check`` gets its read port's collision mask set and maps to block
    RAM with no logic around it; an unmarked one keeps its read-first logic."""
    il = rtlil.convert(_TwoBuffers(marked), name="top")
    marked_il = undefined_collisions(il)
    assert marked_il.count("COLLISION_X_MASK 1'1") == sum(marked)
    assert marked_il.count("COLLISION_X_MASK 1'0") == 2 - sum(marked)
    (tmp_path / "top.il").write_text(marked_il)
    check_yosys_log(_synth_ice40(tmp_path, "read_rtlil top.il"))
    cells = _stat_cells(tmp_path / "stat.json")
    assert _count(cells, ["SB_RAM40_4K"]) == 4
    logic = _count(cells, ["SB_LUT4", "SB_DFF"])
    assert (logic == 0) == all(marked)
    assert undefined_collisions(marked_il) == marked_il


def test_undefined_collisions_skip_asynchronous_reads():
    """A marked memory read asynchronously (LUT RAM tile buffers) keeps its mask: yosys asserts
    on a collision mask without a read clock."""
    il = rtlil.convert(TileBuffer(2, 64, 6, lutram=True), name="top")
    assert "\\no_rw_check" in il
    assert undefined_collisions(il) == il
    assert undefined_collisions(rtlil.convert(TileBuffer(2, 64, 6, lutram=False),
                                              name="top")).count("COLLISION_X_MASK 1'1") == 2


def _mult18x18d_model():
    """A behavioral ``MULT18X18D`` for the options
    :func:`~cnnforge.hw.rtl.common.ecp5_product` uses (Lattice TN1267: ``P = A · B``, signed per
    ``SIGNEDA`` / ``SIGNEDB``, in the output register on CLK0, CE0, synchronous RST0, the
    operands through the input registers on the same if ``REG_INPUTA_CLK`` / ``REG_INPUTB_CLK``
    are CLK0); yosys has the block only as a black box."""
    def bits(name, n):
        return [f"{name}{i}" for i in range(n)]
    ins = bits("A", 18) + bits("B", 18) + bits("C", 18)
    ctl = ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"] + [
        f"{k}{i}" for k in ("CLK", "CE", "RST") for i in range(4)]
    outs = bits("P", 36)

    def vec(names):
        return "{" + ", ".join(reversed(names)) + "}"
    return f"""module MULT18X18D({", ".join(ins + ctl + outs)});
  parameter REG_OUTPUT_CLK = "NONE"; parameter REG_OUTPUT_CE = "CE0";
  parameter REG_OUTPUT_RST = "RST0"; parameter RESETMODE = "SYNC"; parameter GSR = "ENABLED";
  parameter REG_INPUTA_CLK = "NONE"; parameter REG_INPUTA_CE = "CE0";
  parameter REG_INPUTA_RST = "RST0"; parameter REG_INPUTB_CLK = "NONE";
  parameter REG_INPUTB_CE = "CE0"; parameter REG_INPUTB_RST = "RST0";
  input {", ".join(ins + ctl)};
  output {", ".join(outs)};
  wire [17:0] a_in = {vec(bits("A", 18))}, b_in = {vec(bits("B", 18))};
  reg [17:0] a_q, b_q;
  always @(posedge CLK0) if (RST0) begin a_q <= 0; b_q <= 0; end
    else if (CE0) begin a_q <= a_in; b_q <= b_in; end
  wire [17:0] a = REG_INPUTA_CLK == "CLK0" ? a_q : a_in;
  wire [17:0] b = REG_INPUTB_CLK == "CLK0" ? b_q : b_in;
  wire [35:0] ae = SIGNEDA ? {{{{18{{a[17]}}}}, a}} : {{18'b0, a}};
  wire [35:0] be = SIGNEDB ? {{{{18{{b[17]}}}}, b}} : {{18'b0, b}};
  reg [35:0] p;
  always @(posedge CLK0) if (RST0) p <= 0; else if (CE0) p <= ae * be;
  assign {vec(outs)} = p;
endmodule
"""


class _Product(wiring.Component):
    """``p = a · b`` in a register (``reset``: cleared by the domain's reset): the plain
    multiply, or a DSP block's register for ``family="ecp5"`` / ``"ice40"``
    (:func:`~cnnforge.hw.rtl.common.product_register`)."""

    def __init__(self, width, signed_operands, reset, family, width_b=None,
                 input_registers=False):
        self._reset, self._family, self._inputs = reset, family, input_registers
        shape = signed if signed_operands else unsigned
        width_b = width if width_b is None else width_b
        super().__init__({"a": In(shape(width)), "b": In(shape(width_b)),
                          "p": Out(shape(width + width_b))})

    def elaborate(self, platform):
        m = Module()
        p = Signal.like(self.p, reset_less=not self._reset)
        product_register(m, self._family, "mult", self.a, self.b, p, self._inputs)
        m.d.comb += self.p.eq(p)
        return m


@pytest.mark.parametrize("make", [
    lambda family: _Product(10, True, True, family),    # signed (PE) products, 20 bits > 18
    lambda family: _Product(6, False, False, family),   # the requantizer's (unsigned) products
    lambda family: _Product(6, True, True, family, input_registers=True),
    lambda family: _Product(6, False, False, family, input_registers=True),
], ids=["signed", "unsigned", "signed-inputs", "unsigned-inputs"])
def test_ecp5_registered_products_equal_the_generic_ones(tmp_path, make):
    """The ECP5 instance (a ``MULT18X18D`` holding the product in its output register, the
    operands in its input registers too with ``input_registers``) equals the registered
    multiply it replaces (with fabric registers before it), outputs compared over four cycles
    of free inputs and resets by yosys' SAT solver (``miter -equiv``; operands narrower than
    the units', which the bit-by-bit wiring makes no different, so that the multiplier miter
    stays small)."""
    # the block's parameters applied first (hierarchy derives it from the model), then the gold
    _prove_equivalent(tmp_path, make, "ecp5", _mult18x18d_model(),
                      "read_verilog -defer model.v\nread_rtlil gate.il\nhierarchy -top gate\n"
                      "read_rtlil gold.il")


def _prove_equivalent(tmp_path, make, family, model, read, sat_opts=""):
    """``make(None)`` (gold) equals ``make(family)`` (gate, with ``model``: the Verilog of its DSP
    block) over four cycles of free inputs: yosys' ``miter -equiv`` and SAT solver. ``read``:
    the commands reading ``model.v``, ``gold.il`` and ``gate.il``."""
    (tmp_path / "model.v").write_text(model)
    (tmp_path / "gold.il").write_text(rtlil.convert(make(None), name="gold"))
    (tmp_path / "gate.il").write_text(rtlil.convert(make(family), name="gate"))
    (tmp_path / "eq.ys").write_text(
        f"{read}\nproc\nasync2sync\nopt_clean\n"
        "miter -equiv -flatten -make_assert -ignore_gold_x gold gate miter\nhierarchy -top miter\n"
        f"sat -verify -prove-asserts -set-init-zero -seq 4 {sat_opts} miter\n")
    proc = subprocess.run([tool_path("yosys"), "-q", "eq.ys"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class _ProductPair(wiring.Component):
    """``p0 = a0 · b0``, ``p1 = a1 · b1`` in registers, int8 operands: two plain multiplies, or
    :func:`ice40_product_pair` (one ``SB_MAC16`` in 8×8 mode) for ``family="ice40"``."""

    def __init__(self, family):
        self._family = family
        super().__init__({**{f"{n}{i}": In(signed(8)) for n in "ab" for i in (0, 1)},
                          "p0": Out(signed(16)), "p1": Out(signed(16))})

    def elaborate(self, platform):
        m = Module()
        if self._family == "ice40":
            ice40_product_pair(m, "pair", self.a0, self.b0, self.p0, self.a1, self.b1, self.p1)
        else:
            m.d.sync += [self.p0.eq(self.a0 * self.b0), self.p1.eq(self.a1 * self.b1)]
        return m


@pytest.mark.parametrize("make", [
    # products wider than 16 bits (both halves of the block's output, both bytes of A), few
    # partial products for the solver
    lambda family: _Product(14, True, True, family, 3),     # signed (Winograd PE) products
    lambda family: _Product(14, False, False, family, 3),   # the requantizer's (unsigned) ones
    _ProductPair,                                           # two int8 PEs in one block
], ids=["signed", "unsigned", "pair"])
def test_ice40_registered_products_equal_the_generic_ones(tmp_path, make):
    """The iCE40 instances (``SB_MAC16`` in 16×16 mode with its pipeline register, and in 8×8
    mode with both product registers) equal the registered multiplies they replace: yosys' own
    cell model of the block (``share/ice40/cells_sim.v``, which the gate-level simulation also
    uses) against the plain multiplies, outputs compared over four cycles of free inputs by
    yosys' SAT solver (reset low: the block's registers are not reset)."""
    text = cell_models("ice40").read_text()
    start = text.index("module SB_MAC16")
    # the block's parameters applied first (hierarchy derives it from the model), then the gold
    _prove_equivalent(tmp_path, make, "ice40", text[start:text.index("endmodule", start) + 9],
                      "read_verilog -defer model.v\nread_rtlil gate.il\nhierarchy -top gate\n"
                      "read_rtlil gold.il", "-set in_rst 0")


@pytest.mark.parametrize("unit, blocks", [
    (lambda family: ProcessingElement(20, 8, 8, family=family), 1),
    (lambda family: ProcessingElement(20, 8, 8, family=family, product_registers=3), 1),
    (lambda family: PostProcessor(32, [{"bias": 0, "multiplier": 1 << 30, "shift": 0}] * 2, 4,
                               family=family), 4),
], ids=["pe", "pe-inputs", "requantizer"])
def test_ecp5_units_instantiate_their_multiplies(unit, blocks):
    """With ``family="ecp5"`` a PE's product and the requantizer's partial products are
    ``MULT18X18D`` instances and no multiply is left for yosys to map."""
    generic, ecp5 = rtlil.convert(unit(None)), rtlil.convert(unit("ecp5"))
    assert ecp5.count("cell \\MULT18X18D ") == blocks and "$mul" not in ecp5
    assert generic.count("cell $mul ") == blocks and "MULT18X18D" not in generic
