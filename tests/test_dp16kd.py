"""The ECP5 form of the banked memory (``BankedMemory(family="ecp5")``: ``DP16KD`` instances
with their output registers) against the memories yosys maps itself.

* ``dp16kd_initvals`` writes a ROM's words into the ``INITVAL_xx`` parameters exactly as yosys'
  own ECP5 block-RAM mapping does (synth_ecp5 on a 2048 × 9 and a 1024 × 18 ROM, parameters
  compared);
* one bank's blocks (``dp16kd_bank``, both configurations, a ROM and a RAM) equal a synchronous
  read with a register after it, and a ROM and a RAM built of instances equal the generic
  ``BankedMemory`` (yosys' SAT solver on a miter, eight cycles of free addresses, writes and
  data), with a behavioral ``DP16KD`` for the options the instances use (yosys has the block
  only as a black box).
"""

import json
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Assume, Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from cnnforge.boards.synth import _instance_memories, tool_path
from cnnforge.hw.rtl.banked import BankedMemory, dp16kd_bank, dp16kd_initvals


def _yosys(cwd, script):
    (cwd / "run.ys").write_text(script)
    proc = subprocess.run([tool_path("yosys"), "-q", "run.ys"], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class _Rom(wiring.Component):
    """A ROM of ``len(words)`` words of ``width`` bits with a synchronous read: what yosys maps
    to one ``DP16KD`` (2048 × 9, 1024 × 18)."""

    def __init__(self, words, width):
        self._words = words
        super().__init__({"addr": In(range(len(words))), "data": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = memory.Memory(shape=len(self.data), depth=len(self._words),
                                               init=self._words)
        rd = rom.read_port()
        m.d.comb += [rd.addr.eq(self.addr), self.data.eq(rd.data)]
        return m


@pytest.mark.parametrize("width, depth", [(9, 2048), (18, 1024)])
def test_initvals_are_what_yosys_writes(tmp_path, width, depth):
    words = np.random.default_rng(width).integers(0, 1 << width, depth).tolist()
    (tmp_path / "rom.il").write_text(rtlil.convert(_Rom(words, width), name="top"))
    _yosys(tmp_path, "read_rtlil rom.il\nsynth_ecp5 -top top -json rom.json\n")
    cells = json.loads((tmp_path / "rom.json").read_text())["modules"]["top"]["cells"]
    blocks = [c for c in cells.values() if c["type"] == "DP16KD"]
    assert len(blocks) == 1
    params = blocks[0]["parameters"]
    assert int(params["DATA_WIDTH_A"], 2) == width
    mine = dp16kd_initvals(words, width)
    assert len(mine) == 64
    assert all(format(v, "0320b") == params[k] for k, v in mine.items())


def _dp16kd_model():
    """A behavioral ``DP16KD`` for what ``dp16kd_bank`` uses (Lattice TN1264): ports 9 bits
    wide (the word address on AD[13:3]) or 18 (on AD[13:4], AD[1:0] a write's byte enables);
    port A writes (``WEA``) on ``CLKA``; port B reads on ``CLKB`` into its output register
    (``REGMODE_B = "OUTREG"``: the word two edges after its address); the words start from
    ``INITVAL_00`` and ``_01`` (rows of 18 bits in 20, a row two 9-bit words or one 18-bit
    word) — enough for the 32 words the miters address."""
    pins = ([f"DIA{i}" for i in range(18)] + [f"ADA{i}" for i in range(14)]
            + [f"DIB{i}" for i in range(18)] + [f"ADB{i}" for i in range(14)]
            + ["CEA", "OCEA", "CLKA", "WEA", "RSTA", "CEB", "OCEB", "CLKB", "WEB", "RSTB"]
            + [f"CS{p}{i}" for p in "AB" for i in range(3)])
    outs = [f"DO{p}{i}" for p in "AB" for i in range(18)]
    params = "\n".join(f'  parameter {k} = "";' for k in (
        "REGMODE_A", "REGMODE_B", "RESETMODE", "ASYNC_RESET_RELEASE", "CSDECODE_A",
        "CSDECODE_B", "WRITEMODE_A", "WRITEMODE_B", "GSR"))
    inits = "\n".join(f"  parameter [319:0] INITVAL_{i:02X} = 0;" for i in range(64))
    return f"""module DP16KD({", ".join(pins + outs)});
  parameter DATA_WIDTH_A = 18; parameter DATA_WIDTH_B = 18;
{params}
{inits}
  input {", ".join(pins)};
  output {", ".join(outs)};
  localparam W = DATA_WIDTH_A;
  wire [13:0] ada = {{{", ".join(f"ADA{i}" for i in reversed(range(14)))}}};
  wire [13:0] adb = {{{", ".join(f"ADB{i}" for i in reversed(range(14)))}}};
  wire [4:0] wa = W == 9 ? ada[7:3] : ada[8:4];
  wire [4:0] ra = W == 9 ? adb[7:3] : adb[8:4];
  wire [17:0] di = {{{", ".join(f"DIA{i}" for i in reversed(range(18)))}}};
  wire [639:0] initval = {{INITVAL_01, INITVAL_00}};
  reg [17:0] mem [0:31];
  reg [17:0] rd, q;
  integer i;
  initial for (i = 0; i < 32; i = i + 1)
    mem[i] = W == 9 ? initval[(i / 2) * 20 + (i % 2) * 9 +: 9] : initval[i * 20 +: 18];
  always @(posedge CLKA)
    if (WEA && (W == 9 || ada[1:0] == 2'b11)) mem[wa] <= W == 9 ? di[8:0] : di;
  always @(posedge CLKB) begin rd <= mem[ra]; q <= rd; end
  assign {{{", ".join(f"DOB{i}" for i in reversed(range(18)))}}} = W == 9 ? q[8:0] : q;
  assign {{{", ".join(f"DOA{i}" for i in reversed(range(18)))}}} = 0;
endmodule
"""


class _Flat(wiring.Component):
    """A :class:`BankedMemory` of ``depth`` words with its ports flattened to plain values (the
    miter compares top-level ports), its addresses assumed in range."""

    def __init__(self, memory_, depth, write):
        self._mem, self._depth = memory_, depth
        ports = {"r_addr": In(len(memory_.r_addr[0])), "r_data": Out(len(memory_.r_data[0]
                                                                         .as_value()))}
        if write:
            ports.update({"w_addr": In(len(memory_.w_addr)),
                          "w_data": In(len(memory_.w_data.as_value())), "w_en": In(1)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = self._mem
        m.d.comb += [mem.r_addr[0].eq(self.r_addr), self.r_data.eq(mem.r_data[0].as_value()),
                     Assume(self.r_addr < self._depth)]
        if hasattr(self, "w_addr"):
            m.d.comb += [mem.w_addr.eq(self.w_addr), mem.w_data.eq(self.w_data),
                         mem.w_en.eq(self.w_en), Assume(self.w_addr < self._depth)]
        return m


def _prove_equal(tmp_path, make, latency):
    """``make(None)`` equals ``make("ecp5")`` (with :func:`_dp16kd_model`) in every output over
    eight cycles from zeroed registers, once a first read has come (``latency`` cycles: before
    it a ROM's constant bits differ): yosys' ``miter -equiv`` and SAT solver, the designs'
    assumptions kept. (The miter first, then the hierarchy below it, so that the instances'
    parameters reach the model.)"""
    (tmp_path / "model.v").write_text(_dp16kd_model())
    (tmp_path / "gold.il").write_text(rtlil.convert(make(None), name="gold"))
    (tmp_path / "gate.il").write_text(rtlil.convert(make("ecp5"), name="gate"))
    _yosys(tmp_path, "read_verilog model.v\nread_rtlil gold.il\nread_rtlil gate.il\n"
           "miter -equiv -make_assert -ignore_gold_x gold gate miter\n"
           "hierarchy -check -top miter\nproc\nflatten\nchformal -lower\nmemory_map\n"
           "opt_clean\nsat -verify -prove-asserts -set-assumes -set-init-zero -seq 8 "
           f"-prove-skip {latency} miter\n")


class _OneBank(wiring.Component):
    """32 words of ``width`` bits (a ROM of ``init``, or a RAM), read into a register after a
    synchronous read: a memory yosys maps (``family`` None), or :func:`dp16kd_bank`'s blocks in
    the configuration of a bank of ``bank_words``."""

    def __init__(self, width, init, bank_words, family):
        self._init, self._bank_words, self._family = init, bank_words, family
        ports = {"r_addr": In(5), "r_data": Out(width)}
        if init is None:
            ports.update({"w_addr": In(5), "w_data": In(width), "w_en": In(1)})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        write = (self.w_addr, self.w_data, self.w_en) if self._init is None else None
        if self._family == "ecp5":
            dp16kd_bank(m, "bank", len(self.r_data), self._init, write, self.r_addr,
                        self.r_data, self._bank_words)
            return m
        m.submodules.mem = mem = memory.Memory(shape=len(self.r_data), depth=32,
                                               init=self._init or [])
        if write is not None:
            wr = mem.write_port()
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en)]
        rd = mem.read_port()
        m.d.comb += rd.addr.eq(self.r_addr)
        m.d.sync += self.r_data.eq(rd.data)
        return m


@pytest.mark.parametrize("kind", ["rom", "ram"])
@pytest.mark.parametrize("bank_words, width", [(2048, 13), (1024, 20)],
                         ids=["2048x9", "1024x18"])
def test_bank_blocks_equal_a_registered_read(tmp_path, kind, bank_words, width):
    """A bank's blocks, two side by side (13 bits in 9-bit blocks, 20 in 18-bit ones), equal a
    synchronous read and a register: every address, write and datum the solver picks (the
    ROM's top bit set in every word, its bit 2 clear: constants, not block columns)."""
    init = np.random.default_rng(width).integers(0, 1 << width, 32)
    init = ((init | 1 << (width - 1)) & ~4).tolist()
    _prove_equal(tmp_path, lambda family: _OneBank(width, init if kind == "rom" else None,
                                                   bank_words, family), 2)


ROM_WORDS = (np.random.default_rng(3).integers(-128, 128, (10, 2)) | [0, 1]).tolist()


@pytest.mark.parametrize("kind", ["rom", "ram"])
def test_instances_equal_the_generic_memory(tmp_path, kind):
    """Ten words of two int8 lanes in banks of four (three banks, the last short; 1024 × 18
    blocks; the ROM's second lanes odd): the ROM's reads, and the RAM's writes and reads on the
    same and other words in every order the solver finds, equal the generic form's in every
    cycle."""
    shape = data.ArrayLayout(signed(9), 2)
    init = None if kind == "ram" else ROM_WORDS
    _prove_equal(tmp_path, lambda family: _Flat(BankedMemory(shape, 10, 4, init=init,
                                                             family=family), 10, kind == "ram"),
                 4)


def test_synth_report_lists_the_instance_banks():
    """``cnnforge synth``'s memory table names each bank built of instances, with its blocks:
    5,000 int8 words in banks of 2048 are two 2048 × 9 banks and a 1024 × 18 one, 64-bit words
    eight and four blocks a bank."""
    il = rtlil.convert(BankedMemory(signed(8), 5000, 2048, family="ecp5"), name="top")
    assert [(m["memory"], m["blocks"]) for m in _instance_memories(il)] == [
        ("top.bank0", 1), ("top.bank1", 1), ("top.bank2", 1)]
    wide = data.ArrayLayout(signed(8), 8)
    il = rtlil.convert(BankedMemory(wide, 3000, 2048, family="ecp5", read_ports=2), name="top")
    assert [(m["memory"], m["blocks"], m["mapped"]) for m in _instance_memories(il)] == [
        ("top.bank0", 16, "block RAM"), ("top.bank1", 8, "block RAM")]
