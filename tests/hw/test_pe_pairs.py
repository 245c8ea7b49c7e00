"""The iCE40 systolic array, whose PEs share ``SB_MAC16`` blocks two by two (8×8 mode,
``cnnforge.hw.rtl.common.ice40_product_pair``), in Verilator with yosys' cell model of the
block, against NumPy ``W @ X``, exactly.

Amaranth's simulator cannot run an ``Instance``, so this module holds a cocotb bench (run inside
Verilator, which imports the module as ``tests.hw.test_pe_pairs``) and the pytest side that
builds the array's Verilog with ``share/ice40/cells_sim.v`` and compares. Shapes with an even and
an odd number of PEs (the odd one out multiplies alone, in 16×16 mode), reductions shorter and
longer than a pass's drain window, all-extreme operands (the products' signs in both halves of a
block).
"""

# No ``from __future__ import annotations``: see tests/sim/test_runner.py.

import cocotb
import numpy as np
import pytest
from amaranth.hdl import Fragment
from cocotb.triggers import RisingEdge

from cnnforge.boards.synth import cell_models
from cnnforge.hw.rtl.pe_array import SystolicArray
from cnnforge.sim import runner as sr

from .test_pe_array import acc_width_for, golden_gemm, random_operands

TOPLEVEL = "pairs"
K_MAX = 40


# ------------------------------------------------------------------------------------------------
# cocotb bench (inside the simulator)


@cocotb.test()
async def tb_gemm(dut):
    """Passes back to back at the edge (as ``cnnforge.sim.rtl.rtl_gemm`` drives them); every
    pass's results read when ``done`` is sampled high."""
    stim = sr.load_stimulus()
    w, x = np.asarray(stim["w"]), np.asarray(stim["x"])
    passes, rows, k = w.shape
    cols = x.shape[2]
    beats = max(k, rows * cols + 1)
    sr.start_clock(dut.clk, 10)
    dut.mode.value = 0
    dut.preload_en.value = 0
    dut.ctl_edge.value = 0
    await sr.reset(dut.clk, dut.rst)
    edge = RisingEdge(dut.clk)
    results = []
    for cycle in range(passes * beats + rows + cols + 8):
        p, s = divmod(cycle, beats)
        valid = p < passes and s < k
        for r in range(rows):
            getattr(dut, f"w_edge__{r}").value = int(w[p, r, s]) & 0xFF if valid else 0
        for c in range(cols):
            getattr(dut, f"x_edge__{c}").value = int(x[p, s, c]) & 0xFF if valid else 0
        dut.ctl_edge.value = (valid | (valid and s == 0) << 1 | (valid and s == k - 1) << 2)
        await edge
        if dut.done.value:
            results.append([[getattr(dut, f"results__{r}__{c}").value.to_signed()
                             for c in range(cols)] for r in range(rows)])
    sr.save_results({"results": results})


# ------------------------------------------------------------------------------------------------
# pytest side


def build_pairs(rows, cols):
    """Verilog of the iCE40 ``rows × cols`` array with the block's cell model, built once."""
    build_dir = sr.build_root() / "test" / f"pe-pairs-{rows}x{cols}"
    dut = SystolicArray(rows, cols, acc_width_for(K_MAX), family="ice40")
    assert dut.paired and dut.dsp_blocks == (rows * cols + 1) // 2
    src = sr.write_verilog(dut, build_dir / f"{TOPLEVEL}.v", name=TOPLEVEL)
    assert src.read_text().count("SB_MAC16 ") == dut.dsp_blocks
    return sr.build([cell_models("ice40"), src], TOPLEVEL, build_dir / "sim_build"), build_dir


@pytest.mark.parametrize("rows, cols", [(2, 2), (3, 3)])
def test_paired_array_gemm(rows, cols):
    runner, build_dir = build_pairs(rows, cols)
    rng = np.random.default_rng(rows * 10 + cols)
    cases = {f"k{k}": random_operands(rng, 3, rows, cols, k) for k in (1, 9, K_MAX)}
    ones_w, ones_x = np.ones((2, rows, 7), np.int64), np.ones((2, 7, cols), np.int64)
    sign = np.where(np.arange(rows)[:, None] % 2, 127, -127)
    cases["extremes"] = ((np.stack([-127 * ones_w[0], sign * ones_w[1]])).astype(np.int8),
                         (-128 * ones_x).astype(np.int8))
    for name, (w, x) in cases.items():
        ex = sr.Exchange.create(build_dir, name, {"w": w, "x": x})
        sr.run(runner, TOPLEVEL, __name__, testcase="tb_gemm", extra_env=ex.env(), name=name)
        got = np.array(ex.read_results()["results"], np.int64)
        expected = golden_gemm(w, x)
        assert got.shape == expected.shape, name
        bad = np.argwhere(got != expected)
        assert bad.size == 0, (f"{name}: {len(bad)} wrong results, first at (pass, r, c) = "
                               f"{tuple(bad[0])}: got {got[tuple(bad[0])]}, expected "
                               f"{expected[tuple(bad[0])]}")


def test_pairing_only_for_ice40_int8():
    """Two PEs a block only on iCE40 with 8-bit operands (Winograd's wider operands, ECP5 and
    simulation keep a multiply per PE)."""
    arrays = {"ice40": SystolicArray(3, 3, 20, family="ice40"),
              "ice40 wide": SystolicArray(3, 3, 20, 12, 11, family="ice40"),
              "ecp5": SystolicArray(3, 3, 20, family="ecp5"), "sim": SystolicArray(3, 3, 20)}
    assert {k: a.dsp_blocks for k, a in arrays.items()} == {"ice40": 5, "ice40 wide": 9,
                                                             "ecp5": 9, "sim": 9}
    for array in arrays.values():
        Fragment.get(array, None)            # elaborates (and marks the component used)
