"""The memory planner (``hw/compiler/memory.py``) on real compiled programs: its bits equal the
cost model's, it covers every memory the RTL declares, it reproduces the block RAM counts of
synthesis runs, and it refuses what does not fit with one line naming the memory."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import (EBR, LOGIC, LUTRAM, MEMORY_FAMILIES, SPRAM, check_fits,
                                         device_config, fit_memories, fm_read_ports, memories,
                                         plan_memory)
from cnnforge.hw.compiler.program import (AcceleratorConfig, ConfigError, compile_network,
                                          weight_image)
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.perf import buffer_bits, network_model
from cnnforge.hw.tools.cli import _compile, _run_report, build_parser
from cnnforge.sim.accel import RTLResult
from cnnforge.sim.golden import run_quantized
from tests.helpers import conv_net as _conv_net
from tests.helpers import inverted_residual

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits" / "net.py"
TINY = REPO / "examples" / "mlperf_tiny"

#: Synthesis runs of the digits network's board core (``cnnforge synth``, yosys 0.70 / nextpnr
#: 0.11 from YoWASP, 2026-12-06): block RAMs nextpnr placed (ICESTORM_RAM, DP16KD) and LUT RAM
#: cells (TRELLIS_DPR16X4). yosys' log: on up5k (4x3) the parameter ROM (5), feature map (2
#: copies), weight ROM (4), input tile banks (3), pass metadata FIFO (2), the post-processor's
#: address delay line (1) and image buffer (1) in SB_RAM40_4K; on lfe5u-25f the parameter ROM
#: (2), weight ROM (1) and feature map (2) in DP16KD, the tile banks (64 cells), the image buffer
#: (8), the metadata FIFO (7: the bits the OR drain reads) and the delay line (2) in
#: TRELLIS_DPR16X4. Since then the metadata FIFO carries an OR pass's valid columns (2 bits on
#: 4×4: 8 FIFO cells planned, 82 in all). A yosys 0.70 run on 2026-12-07 maps 77 TRELLIS_DPR16X4
#: and 9 DP16KD with and without those 2 bits: the lfe5u-25f figures are the planner's model,
#: which no longer matches yosys' mapping of this design exactly.
MEASURED = {"up5k": {"ebr": 18, "lutram": 0}, "lfe5u-25f": {"ebr": 5, "lutram": 82}}


def device_program(qnet, key, **kw):
    """The design ``cnnforge synth --device key`` builds (its array, algorithm, tile buffers)."""
    dev = DEVICES[key]
    config = dev.config(**kw)
    return compile_network(qnet, config)


@pytest.fixture(scope="module")
def digits():
    net = load_network(DIGITS)
    return net, quantize(net)


@pytest.fixture(scope="module")
def kws():
    return compile_network(load_network(TINY / "kws_ref_model.tflite").quantized,
                           AcceleratorConfig(2, 2, algorithm="direct"))


@pytest.fixture(scope="module")
def vww():
    return compile_network(load_network(TINY / "vww_96_int8.tflite").quantized,
                           AcceleratorConfig(8, 8, lutram_buffers=True))


@pytest.fixture(scope="module")
def resnet():
    return device_program(load_network(TINY / "pretrainedResnet_quant.tflite").quantized,
                          "lfe5u-25f")


# ------------------------------------------------------------------------------------------------
# The plan's memories


@pytest.mark.parametrize("rows, cols, dataflow", [(1, 1, "or"), (2, 3, "ir"), (3, 2, "wr"),
                                                  (4, 4, "auto")])
def test_bits_equal_buffer_bits(digits, rows, cols, dataflow):
    """Where the plan and ``perf.buffer_bits`` both count a memory they count the same bits,
    and the exploration's view (:func:`memories`) places the memories it shares with the plan
    the same way (same shape, copies, blocks) when the tile buffers read synchronously."""
    _, qnet = digits
    program = compile_network(qnet, AcceleratorConfig(rows, cols, dataflow=dataflow,
                                                      algorithm="direct"))
    bits = buffer_bits(program)
    names = {"input tile buffer": "input", "weight ROM": "weights", "feature map": "fm",
             "parameter ROM": "params", "partial-sum buffer": "psum"}
    for key in DEVICES:
        plan = plan_memory(program, key)
        planned = {m.spec.name: m for m in plan.memories}
        for name, field in names.items():
            assert (planned[name].spec.bits if name in planned else 0) == bits[field], name
        for use in memories(program, MEMORY_FAMILIES[DEVICES[key].family]):
            m = planned[use.name]
            assert (m.spec.count, m.spec.depth, m.spec.width, m.copies, m.blocks, m.lutrams) == (
                use.count, use.depth, use.width, use.copies, use.blocks, use.lutrams), use
        assert planned["feature map"].copies == 2


def test_plan_covers_every_rtl_memory(digits, resnet):
    """Every ``memory.Memory(`` of the RTL (hw/rtl, boards/hostlink.py) has a planned memory
    naming its file; the union over a stationary program, one with Winograd and add layers,
    one in SPRAM and one with a banked weight ROM and feature map has them all."""
    _, qnet = digits
    stationary = compile_network(qnet, AcceleratorConfig(2, 2, dataflow="wr", algorithm="direct"))
    spram = compile_network(quantize(_conv_net()), AcceleratorConfig(
        2, 2, spram_feature_maps=True, spram_weights=True))
    banked = compile_network(quantize(_conv_net(pool=False)), AcceleratorConfig(
        2, 2, weight_bank_words=64, fm_bank_words=64))
    sources = [m.spec.source for p in (stationary, resnet, spram, banked)
               for m in plan_memory(p, "lfe5u-85f").memories]
    files = sorted((REPO / "hw" / "rtl").glob("*.py")) + [REPO / "boards" / "hostlink.py"]
    for path in files:
        rel = str(path.relative_to(REPO))
        declared = len(re.findall(r"memory\.Memory\(", path.read_text()))
        if rel == "hw/rtl/spram.py":       # one SPRAM model: the feature-map slots, the weights
            declared = 2
        if rel == "hw/rtl/banked.py":      # one bank memory: the feature map's, the weight ROM's,
            declared = 3                   # the parameter ROM's
        planned = len({s for s in sources if s.startswith(rel + " ")})
        assert planned == declared, (rel, declared, planned)
    assert {"add rescale tables", "Winograd input buffer", "Winograd output buffer"} <= {
        m.spec.name for m in plan_memory(resnet, "lfe5u-85f").memories}


def test_kinds_and_budget(digits):
    """Budgets from the data sheets: up5k 30 EBR of 4 Kbit (15 KB) and 4 SPRAM of 32 KB, no LUT
    RAM; ECP5 EBR of 18 Kbit (2,304 bytes with parity) and one 16x4 LUT RAM per 8 LUT4s (3,036
    on the -25F: its 194 Kbit of distributed RAM). SPRAM is never used."""
    _, qnet = digits
    program = device_program(qnet, "up5k")
    up5k = plan_memory(program, "up5k")
    assert (up5k.kinds[EBR].total, up5k.kinds[EBR].bytes_total) == (30, 15 * 1024)
    assert (up5k.kinds[SPRAM].used, up5k.kinds[SPRAM].total) == (0, 4)
    assert up5k.kinds[SPRAM].bytes_total == 128 * 1024
    assert (up5k.kinds[LUTRAM].used, up5k.kinds[LUTRAM].total) == (0, 0)
    ecp5 = plan_memory(program, "lfe5u-25f")
    assert ecp5.kinds[LUTRAM].total == 3036 and ecp5.kinds[LUTRAM].bytes_total * 8 == 194_304
    assert ecp5.kinds[EBR].bytes_total == 56 * 2304
    assert plan_memory(program, "lfe5u-85f").kinds[EBR].bytes_total // 1024 == 468
    for plan in (up5k, ecp5):
        assert plan.kinds[EBR].used == sum(m.blocks for m in plan.memories)
        assert plan.kinds[EBR].bytes_used == sum(-(-m.spec.bits * m.copies // 8)
                                                 for m in plan.memories if m.kind == EBR)
        assert {m.kind for m in plan.memories} <= {EBR, LUTRAM, LOGIC}
        assert all(not m.spec.initialized or m.spec.rom for m in plan.memories)
    desc = {m.spec.name: m for m in up5k.memories}["descriptor ROM"]
    assert desc.kind == LOGIC and up5k.logic_bits == desc.spec.bits
    js = up5k.to_json()
    assert js["kinds"][EBR] == {"unit": "SB_RAM40_4K, 4 Kbit", "used": up5k.kinds[EBR].used,
                                "total": 30, "bytes_used": up5k.kinds[EBR].bytes_used,
                                "bytes_total": 15360}
    assert [m["name"] for m in js["memories"]] == [m.spec.name for m in up5k.memories]
    assert "memories" not in up5k.to_json(compact=True)


@pytest.mark.parametrize("key", sorted(MEASURED))
def test_synthesis_runs(digits, key):
    """The block RAMs and LUT RAM cells of the digits network's synthesis runs."""
    _, qnet = digits
    plan = plan_memory(device_program(qnet, key), key)
    assert plan.kinds[EBR].used == MEASURED[key]["ebr"]
    assert plan.kinds[LUTRAM].used == MEASURED[key]["lutram"]
    by_name = {m.spec.name: m for m in plan.memories}
    assert by_name["parameter ROM"].kind == EBR          # rom_style="block" in hw/rtl/ppu.py
    if DEVICES[key].lutram_buffers:
        assert by_name["input tile buffer"].kind == LUTRAM


# ------------------------------------------------------------------------------------------------
# Fitting and refusing


@pytest.mark.parametrize("key", sorted(DEVICES))
def test_digits_fits_every_device(digits, key):
    _, qnet = digits
    program = device_program(qnet, key)
    plan = check_fits(program, key)
    assert plan.fits and plan.reason is None
    assert plan_memory(program, DEVICES[key]) == plan


def test_kws_does_not_fit_up5k_ebr(kws):
    """The keyword-spotting model on a 2x2 array, all in block RAM: the feature map (two
    8,000-byte regions; one read port, the network has no max-pool and no add) and the weight
    ROM each need more than the UP5K's 30 EBR; the one-line refusal names the largest, with the
    figures."""
    fm = -(-kws.fm_depth // 512)               # 512 x 8-bit words per SB_RAM40_4K
    words = len(kws.weights)
    need = -(-words // 256)                    # 256 x 16-bit words per SB_RAM40_4K
    assert kws.config.lanes * 8 == 16 and need > fm > 30
    plan = plan_memory(kws, "up5k")
    assert not plan.fits
    assert plan.reason.startswith(f"weight ROM: {len(weight_image(kws)):,} bytes need {need} EBR "
                                  f"of 4 Kbit; up5k has 30 (15 KB), none left after the feature "
                                  f"map ({fm}), ")
    with pytest.raises(ConfigError) as info:
        check_fits(kws, "up5k")
    assert str(info.value) == plan.reason and "\n" not in plan.reason
    memories = {m.spec.name: m for m in plan.memories}
    assert (memories["feature map"].spec.bytes, memories["feature map"].copies) == (kws.fm_depth, 1)
    assert memories["weight ROM"].blocks == need
    assert plan_memory(kws, "lfe5u-25f").fits


def test_kws_fits_up5k_in_spram():
    """With SPRAM: the feature maps alone or the weights alone in SPRAM are not enough; both
    are (one block per 8,192-value slot, one for the 30,016 bytes of weights), the block RAM
    left for the parameter ROM, the tile buffers, the pass metadata FIFO, the post-processor's
    address delay line and the host link's image buffer."""
    qnet = load_network(TINY / "kws_ref_model.tflite").quantized
    config = AcceleratorConfig(2, 2, algorithm="direct")
    for fm, weights in ((True, False), (False, True)):
        alone = compile_network(qnet, AcceleratorConfig(2, 2, algorithm="direct",
                                                        spram_feature_maps=fm,
                                                        spram_weights=weights))
        assert not plan_memory(alone, "up5k").fits
    program, plan = fit_memories(qnet, config, "up5k")
    assert plan.fits and program.config.spram_feature_maps and program.config.spram_weights
    assert (program.fm_slots, program.fm_depth) == (2, 2 * 8192)
    by_name = {m.spec.name: m for m in plan.memories}
    assert (by_name["feature map"].kind, by_name["feature map"].sprams) == (SPRAM, 2)
    assert (by_name["weights"].kind, by_name["weights"].sprams) == (SPRAM, 1)
    assert by_name["weights"].spec.bytes == len(weight_image(program)) == 30_016
    assert (plan.kinds[SPRAM].used, plan.kinds[EBR].used) == (3, 22)
    assert plan.to_json()["kinds"][SPRAM]["used"] == 3
    assert not plan_memory(program, "lfe5u-25f").fits       # no SPRAM on ECP5
    assert fit_memories(qnet, config, "lfe5u-25f")[0].config.spram_weights is False


def test_vww_refused_on_up5k():
    """VWW is too big for the UP5K even with SPRAM: its largest map (36,864 values) does not
    fit a 32 KB SPRAM slot; the one line says so after the block-RAM overflow."""
    qnet = load_network(TINY / "vww_96_int8.tflite").quantized
    program, plan = fit_memories(qnet, AcceleratorConfig(2, 2, algorithm="direct"), "up5k")
    assert not plan.fits and "\n" not in plan.reason
    assert plan.reason.startswith("feature map: 73,728 bytes need 144 EBR")   # no max-pool, no add
    assert plan.reason.endswith("not in SPRAM: SPRAM feature maps: the largest map (36,864 "
                                "values) does not fit one SPRAM block (32,768 int8 values)")


def test_vww_on_lfe5u_85f(vww):
    """MobileNetV1-0.25 (VWW) on the ECP5-85F's 8x8 array fits: the weight ROM (8 int8 lanes a
    word; a depthwise layer stores one tap of 8 channels a word) takes most of the 208 EBR.
    (The model's verdict; no synthesis run.) The 25F's 56 EBR are far too few."""
    plan = check_fits(vww, "lfe5u-85f")
    rom = {m.spec.name: m for m in plan.memories}["weight ROM"]
    assert rom.spec.bytes == len(vww.weights) * 8
    assert rom.blocks == -(-len(vww.weights) // 512) * 2          # 512 x 36 (PDPW16KD)
    assert plan.fits and rom.blocks < plan.kinds[EBR].used <= 208
    assert plan.kinds[LUTRAM].fits                # the tile banks in LUT RAM
    small = plan_memory(vww, "lfe5u-25f")
    assert not small.fits and small.reason.startswith(
        f"weight ROM: {rom.spec.bytes:,} bytes need {rom.blocks} EBR of 18 Kbit; lfe5u-25f has "
        "56 (126 KB), ")


def test_loader_lanes_read_the_feature_map_twice():
    """A network without a fused max-pool or an add reads its feature map on one port, with
    the loader's second lane on two: the ECP5 block RAM (one read and one write port a block)
    is built twice, as yosys builds it (VWW on the 85F: 163 -> 199 DP16KD measured); a
    max-pool network has the second port either way."""
    qnet = quantize(_conv_net(pool=False))
    fm = {}
    for lanes in (1, 2):
        program = compile_network(qnet, AcceleratorConfig(2, 2, loader_lanes=lanes))
        assert fm_read_ports(program) == lanes
        fm[lanes] = {m.spec.name: m for m in plan_memory(program, "lfe5u-25f").memories}[
            "feature map"]
    assert fm[2].blocks == 2 * fm[1].blocks
    pooled = quantize(_conv_net(pool=True))
    assert fm_read_ports(compile_network(pooled, AcceleratorConfig(2, 2))) == 2


def test_resnet_too_big_for_lfe5u_25f(resnet):
    """ResNet-8 on the 25F's 4x4 array (Winograd and add layers): the weight ROM overflows the
    56 EBR; the same program fits the -85F."""
    with pytest.raises(ConfigError, match=r"^weight ROM: [\d,]+ bytes need \d+ EBR of 18 Kbit; "
                       r"lfe5u-25f has 56 \(126 KB\), none left after the feature map \(\d+\)"):
        check_fits(resnet, "lfe5u-25f")
    assert check_fits(resnet, "lfe5u-85f").fits


# ------------------------------------------------------------------------------------------------
# Command line


def test_run_device_option(digits):
    """``run --device`` compiles the design synth builds for the device (array, algorithm,
    LUT RAM tile buffers, post-processor interval) unless the options say otherwise."""
    parser = build_parser()
    _, _, program = _compile(parser.parse_args(["run", str(DIGITS), "--device", "lfe5u-25f"]))
    assert (program.config.rows, program.config.cols, program.config.lutram_buffers) == (4, 4,
                                                                                         True)
    _, _, program = _compile(parser.parse_args(["run", str(DIGITS), "--device", "up5k",
                                                "--rows", "1"]))
    assert (program.config.rows, program.config.cols, program.config.algorithm) == (1, 3,
                                                                                    "direct")
    assert program.config.ppu_interval == 1          # 2 SB_MAC16 for the PEs: 4 left
    _, _, program = _compile(parser.parse_args(["run", str(DIGITS), "--device", "up5k"]))
    assert (program.config.rows, program.config.cols, program.config.ppu_interval) == (4, 2, 1)
    _, _, program = _compile(parser.parse_args(["run", str(DIGITS)]))
    assert (program.config.rows, program.config.cols, program.config.lutram_buffers) == (4, 4,
                                                                                         False)


def test_device_config_chooses_the_array(digits):
    """The UP5K's 4x3 array time-shares the requantizer: ``device_config`` takes it for the
    keyword-spotting model (fewer cycles), 4x2 for the digits network (its first layer's K = 9
    passes would wait for the slower drain: more cycles) and for a network with an add (which
    cannot share it); an array asked for is built as asked."""
    up5k = DEVICES["up5k"]
    kws = load_network(TINY / "kws_ref_model.tflite").quantized
    cases = [(kws, (4, 3, 2)), (digits[1], (4, 2, 1)), (quantize(inverted_residual()), (4, 2, 1))]
    for qnet, expected in cases:
        cfg = device_config(qnet, up5k, algorithm="direct")
        assert (cfg.rows, cfg.cols, cfg.ppu_interval) == expected
    cycles = {rc: network_model(compile_network(digits[1], up5k.config(*rc)))[1]
              for rc in ((4, 3), (4, 2))}
    assert cycles[(4, 2)] < cycles[(4, 3)]
    cfg = device_config(digits[1], up5k, 4, 3)
    assert (cfg.rows, cfg.cols, cfg.ppu_interval) == (4, 3, 2)
    with pytest.raises(ConfigError, match=r"^layer \S+ \(Add\): an element-wise add"):
        compile_network(quantize(inverted_residual()), device_config(
            quantize(inverted_residual()), up5k, 4, 3))
    assert device_config(kws, DEVICES["lfe5u-85f"]).ppu_interval == 1


@pytest.mark.parametrize("device", [None, "up5k"])
def test_run_report_memory(digits, device):
    """The run report's ``memory`` section: the full plan for ``--device``, else the compact
    plans on every device (no simulation here: the RTL result is the golden model's)."""
    net, qnet = digits
    program = device_program(qnet, device or "lfe5u-85f")
    models, _ = network_model(program)
    x, _ = net.test_data()
    xq = qnet.quantize_input(x[:1])
    golden = run_quantized(qnet, xq)
    counters = [m.counters() for m in models]
    result = RTLResult(logits=golden[-1].reshape(1, -1),
                       cycles=np.array([sum(c["cycles"] for c in counters)]),
                       layers=[[(c, None) for c in counters]], sim_cycles=0, wall_seconds=0.0)
    args = argparse.Namespace(net="digits", device=device)
    report = _run_report(args, program, qnet, None, np.zeros(1, np.int64), golden, result,
                         {"logits": 0, "layers": {}}, {})
    memory = report["memory"]
    assert memory["device"] == device
    keys = [device] if device else sorted(DEVICES)
    assert sorted(memory["plans"]) == keys
    for key, plan in memory["plans"].items():
        assert plan == plan_memory(program, key).to_json(compact=device is None)
        assert plan["fits"] and set(plan["kinds"]) == {EBR, LUTRAM, SPRAM}
    assert ("memories" in memory["plans"][keys[0]]) == (device is not None)
