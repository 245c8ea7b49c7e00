"""Design-space exploration (``cnnforge.hw.tools.explore``, ``cnnforge explore``) on the digits network
for every device: only designs within the device's budget, a non-empty non-dominated Pareto set,
plans that compile back to the same design, JSON / plot / plan files, the planner's tiles, the
memory list against ``perf.buffer_bits``, and one-line errors for a budget too small."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.tools.cli import main
from cnnforge.hw.compiler.program import (DIRECT, AcceleratorConfig, ConfigError,
                                          _layers_from_ops, compile_network, load_plan)
from cnnforge.hw.tools.explore import (FAMILIES, WINOGRAD, Design, DoesNotFit, _confirm,
                                       _layer_options, _pick, blocks, explore, memories,
                                       pareto_front, plot_roofline)
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.models.perf import buffer_bits, layer_model, network_model
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import fit_memories
from cnnforge.sim.rtl import rtl_accelerator
from tests.helpers import golden_layers, inverted_residual, random_images

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits" / "net.py"
SCRIPT = Path(sys.executable).parent / "cnnforge"


@pytest.fixture(scope="module")
def qnet():
    return quantize(load_network(DIGITS))


@pytest.fixture(scope="module")
def explorations(qnet):
    return {key: explore(qnet, key) for key in DEVICES}


def names_of(qnet):
    return ["+".join(o.name for o in grp) for grp in _layers_from_ops(qnet)]


def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and a != b


# ------------------------------------------------------------------------------------------------
# The design space and the Pareto set


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_pareto_within_budget_and_non_dominated(explorations, device):
    """Every proposed design fits the device; the Pareto set is non-empty, fastest first, no
    member dominates another, and every design within the budget is matched or dominated by
    one of them."""
    ex = explorations[device]
    dev = DEVICES[device]
    assert ex.pareto
    assert ex.within_budget <= ex.evaluated == len(ex.designs)
    for d in ex.pareto:
        assert d.dsp <= dev.dsps and d.bram <= dev.bram and d.luts <= dev.luts, d.objectives
        assert d.spram <= dev.spram
    cycles = [d.cycles for d in ex.pareto]
    assert cycles == sorted(cycles)
    assert ex.best is ex.pareto[0]
    for a in ex.pareto:
        for b in ex.pareto:
            assert not dominates(a.objectives, b.objectives)
    front = {d.objectives for d in ex.pareto}
    fits = [d for d in ex.designs if d.dsp <= dev.dsps and d.bram <= dev.bram
            and d.luts <= dev.luts and d.spram <= dev.spram]
    assert len(fits) == ex.within_budget
    for d in fits:
        assert d.objectives in front or any(dominates(p, d.objectives) for p in front)
    # arrays whose DSP blocks do not fit are not enumerated at all (the requantizer on two
    # blocks where the array leaves fewer than four)
    assert all(FAMILIES[dev.family].dsps(r * c, ppu_interval=dev.ppu_interval(r, c))
               <= dev.dsps for r, c in ex.arrays)


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_pareto_plans_compile_to_the_same_design(qnet, explorations, device):
    """Each Pareto design's plan (``Program.plan()``) compiles back (through ``load_plan``) to a
    program with the estimated cycles, per-layer counters, memories and dataflows."""
    ex = explorations[device]
    family = FAMILIES[DEVICES[device].family]
    for design, program in zip(ex.pareto, ex.programs):
        again = compile_network(qnet, **load_plan(json.loads(json.dumps(design.plan))))
        models, cycles = network_model(again)
        assert cycles == design.cycles
        assert [m.counters() for m in models] == [m.counters() for m in design.models]
        assert memories(again, family) == design.memories
        assert tuple(layer.dataflow for layer in again.layers) == design.dataflows
        assert all(layer.algorithm == "direct" for layer in again.layers)
        assert again.plan() == design.plan == program.plan()
        assert sum(-(-layer.macs // again.config.pes) for layer in again.layers) \
            == design.ideal_cycles


def test_devices_order_by_size(explorations):
    """A bigger device never gets a slower best design; the digits network fits all three."""
    best = [explorations[k].best.cycles for k in ("up5k", "lfe5u-25f", "lfe5u-85f")]
    assert best[0] >= best[1] >= best[2]
    assert explorations["lfe5u-85f"].best.pes > explorations["up5k"].best.pes


def test_pareto_front_keeps_the_simplest_of_equals():
    """Equal objectives: one design kept (one dataflow for all layers, smaller buffer first)."""
    def d(cycles, dsp, bram, luts, dfs=("or",), buf=64):
        return Design(rows=1, cols=1, buffer_bytes=buf, dataflows=dfs, tiles=((1, 1),) * len(dfs),
                      cycles=cycles, ideal_cycles=0, dsp=dsp, bram=bram, luts=luts, memories=[],
                      models=[])
    a = d(100, 5, 5, 100, ("or", "ir"))
    b = d(100, 5, 5, 100, ("or", "or"), buf=128)
    c = d(90, 6, 5, 100)
    e = d(95, 6, 5, 100)            # dominated by c
    front = pareto_front([a, b, c, e])
    assert front == [c, b]


# ------------------------------------------------------------------------------------------------
# Pieces of the model


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (4, 4), (8, 2)])
def test_tiles_are_the_planners(qnet, rows, cols):
    """For every dataflow and input buffer budget, explore picks the tiles the compiler's
    planner picks (or none where the compiler refuses the budget)."""
    names = names_of(qnet)
    direct = {n: "direct" for n in names}
    options = _layer_options(_layers_from_ops(qnet),
                             AcceleratorConfig(rows, cols, input_buffer_bytes=1 << 20))
    for df in DIRECT:
        for budget in (cols, 16, 64, 100, 128, 256, 512, 4096):
            if budget < cols:
                continue
            picks = [_pick(opts[df][0], budget) for opts in options]
            try:
                program = compile_network(
                    qnet, AcceleratorConfig(rows, cols, input_buffer_bytes=budget,
                                            dataflow=df.key),
                    algorithms=direct)
            except ConfigError:
                assert any(p is None for p in picks), (df, budget)
                continue
            for layer, pick in zip(program.layers, picks):
                assert pick is not None
                assert (layer.values["Tr"], layer.values["Tc"]) == pick.tile, (df, budget)
                assert layer_model(layer.values, program.config) == pick.model


@pytest.mark.parametrize("rows, cols, dataflow", [(1, 1, "or"), (2, 3, "ir"), (3, 2, "wr"),
                                                  (4, 4, "auto"), (8, 8, "wr")])
def test_memories_match_buffer_bits(qnet, rows, cols, dataflow):
    """The memory list holds exactly the bits ``perf.buffer_bits`` counts (plus the host link's
    image buffer; the parameter ROM goes to logic), on both families."""
    direct = {n: "direct" for n in names_of(qnet)}
    program = compile_network(qnet, AcceleratorConfig(rows, cols, dataflow=dataflow),
                              algorithms=direct)
    bits = buffer_bits(program)
    for family in FAMILIES.values():
        mems = {m.name: m for m in memories(program, family)}
        assert mems["feature map"].bits == bits["fm"]
        assert mems["weight ROM"].bits == bits["weights"]
        assert mems["input tile buffer"].bits == bits["input"]
        assert mems.get("partial-sum buffer", dataclasses.replace(
            mems["feature map"], depth=0)).bits == bits["psum"]
        assert mems["host link image buffer"].bits == program.image_size * 8
        assert mems["feature map"].copies == 2


def test_block_geometry():
    """Block RAM shapes: iCE40 4 Kbit (256x16 ... 2048x2), ECP5 18 Kbit (512x36 ... 16384x1)."""
    ice40, ecp5 = FAMILIES["ice40"], FAMILIES["ecp5"]
    assert blocks(256, 16, ice40) == 1
    assert blocks(512, 8, ice40) == 1
    assert blocks(513, 8, ice40) == 2
    assert blocks(932, 16, ice40) == 4
    assert blocks(256, 22, ice40) == 2
    assert blocks(1024, 18, ecp5) == 1
    assert blocks(512, 36, ecp5) == 1
    assert blocks(16384, 1, ecp5) == 1
    assert blocks(2048, 16, ecp5) == 2
    assert blocks(256, 8, ecp5) == 1


CALIBRATION_DEVICE = {"ice40": "up5k", "ecp5": "lfe5u-25f"}


def test_calibration_points(qnet):
    """The resource model reproduces its synthesis calibration runs (the device's configuration
    for the array, memories placed as ``cnnforge synth`` places them): block RAM at most two
    blocks over, SPRAM and DSP blocks exactly, LUTs within 3 %."""
    nets = {"digits": qnet}
    for key, family in FAMILIES.items():
        assert len(family.calibration) >= 4
        dev = DEVICES[CALIBRATION_DEVICE[key]]
        for point in family.calibration:
            net = point.get("net", "digits")
            if net not in nets:
                nets[net] = quantize(load_network(REPO / "examples" / "mlperf_tiny"
                                                  / f"{net}.tflite"))
            rows, cols = (int(v) for v in point["array"].split("x"))
            dataflows = point["dataflows"].split(",")
            names = names_of(nets[net])
            config = dev.config(rows, cols, algorithm="direct",
                                input_buffer_bytes=point.get("buffer", 4096))
            program, _ = fit_memories(
                nets[net], config, dev,
                dataflows=dict(zip(names, dataflows * len(names) if len(dataflows) == 1
                                   else dataflows)))
            mems = memories(program, family)
            stationary = program.stationary
            # yosys slices some wide memories into blocks of two shapes (the 24-bit weight words
            # of a 3-lane array, the 68-bit parameter ROM): up to two blocks fewer than the
            # planner's one shape
            assert 0 <= sum(m.blocks for m in mems) - point["bram"] <= 2, (key, point)
            assert sum(m.sprams for m in mems) == point.get("spram", 0), (key, point)
            assert family.dsps(rows * cols, stationary, config.ppu_interval) == point["dsp"]
            luts = family.luts(rows * cols, cols, dataflows, sum(m.lutrams for m in mems),
                               config.ppu_interval,
                               any(layer.algorithm == "depthwise" for layer in program.layers))
            assert abs(luts - point["luts"]) <= 0.03 * point["luts"], (key, point, luts)


# ------------------------------------------------------------------------------------------------
# Command line and files


def test_cli_explore_files(qnet, tmp_path, capsys):
    """``cnnforge explore``: the Pareto table, JSON (every Pareto design with its plan, Winograd
    reported as not available), the roofline PNG and the plan file, which round-trips through
    ``load_plan`` (what ``--plan`` reads) to the fastest design."""
    js, png, plan = tmp_path / "x.json", tmp_path / "r.png", tmp_path / "p" / "plan.json"
    assert main(["explore", str(DIGITS), "--device", "lfe5u-25f", "--json", str(js),
                 "--plot", str(png), "--plan-out", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "Pareto-optimal designs" in out and "Winograd" in out
    report = json.loads(js.read_text())
    assert report["device"]["key"] == "lfe5u-25f"
    assert report["space"]["winograd"] == WINOGRAD and not WINOGRAD["available"]
    assert report["pareto"] and all(d["plan"] for d in report["pareto"])
    for d in report["pareto"]:
        assert d["dsp"] <= 28 and d["bram"] <= 56 and d["luts_estimate"] <= 24288
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(plan.read_text()) == report["pareto"][0]["plan"]
    program = compile_network(qnet, **load_plan(plan))
    assert network_model(program)[1] == report["pareto"][0]["cycles"]
    assert len(report["roofline"]["layers"]) == len(program.layers)
    assert [p.name for p in plan.parent.iterdir()] == ["plan.json"]     # no temporary left


def test_cli_default_paths(tmp_path):
    """Without --plot/--plan-out the files go to build/<NET folder>/ under the working
    directory (the installed script)."""
    proc = subprocess.run([str(SCRIPT), "explore", str(DIGITS), "--device", "up5k"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "build" / "digits" / "plan.json").is_file()
    assert (tmp_path / "build" / "digits" / "roofline-up5k.png").is_file()


def check_plan_in_rtl(qnet, design, images):
    """``design`` compiled from its plan runs ``images`` (one) bit-exactly in the Amaranth
    simulator with the counters and cycles the exploration predicted."""
    program = compile_network(qnet, **load_plan(design.plan))
    _, layers, cycles = rtl_accelerator(program, images)
    expected, _ = golden_layers(program, images)
    for (counters, ofm), exp, model in zip(layers[0], expected, design.models):
        assert np.array_equal(ofm, exp[0])
        assert counters == model.counters()
    assert int(cycles[0]) == design.cycles


def test_plan_runs_in_rtl(qnet, explorations):
    """The fastest lfe5u-25f design, compiled from its plan, runs bit-exactly in the Amaranth
    simulator with the counters the exploration predicted."""
    check_plan_in_rtl(qnet, explorations["lfe5u-25f"].best,
                      qnet.quantize_input(load_network(DIGITS).test_data()[0][:1]))


@pytest.mark.slow
def test_cli_run_with_explored_plan(tmp_path):
    """End to end: ``cnnforge explore`` then ``cnnforge run --plan`` (Verilator, 20 images):
    0 mismatches and the measured cycles per image are the explored design's."""
    plan, js = tmp_path / "plan.json", tmp_path / "explore.json"
    assert main(["explore", str(DIGITS), "--device", "lfe5u-85f", "--plan-out", str(plan),
                 "--json", str(js), "--plot", str(tmp_path / "r.png")]) == 0
    report = tmp_path / "run.json"
    assert main(["run", str(DIGITS), "--plan", str(plan), "--images", "20", "--json",
                 str(report), "--build-dir", str(tmp_path / "sim")]) == 0
    run = json.loads(report.read_text())
    best = json.loads(js.read_text())["pareto"][0]
    assert run["rtl_golden_mismatches"] == 0 and not any(run["layer_mismatches"].values())
    assert run["plan"] == json.loads(plan.read_text())
    assert run["cycles_per_image"] == best["cycles"]
    assert [layer["counters"] for layer in run["layers"]] == \
        [layer["counters"] for layer in best["layers"]]


# ------------------------------------------------------------------------------------------------
# Budgets too small


def test_too_few_dsps(qnet):
    """A device with 1 DSP block: even a 1x1 array needs more; the error names the resource,
    the need and the budget."""
    tiny = dataclasses.replace(DEVICES["up5k"], key="tiny", dsps=1)
    need = FAMILIES["ice40"].dsps(1, ppu_interval=2)       # the smallest: time-shared
    with pytest.raises(DoesNotFit, match=rf"tiny: DSP blocks: needs {need} SB_MAC16 .* "
                                         rf"budget 1$"):
        explore(qnet, tiny)


def test_too_little_block_ram(qnet):
    """Enough DSPs but 3 block RAMs: the digits network's feature map and weights need more."""
    tiny = dataclasses.replace(DEVICES["lfe5u-25f"], key="tiny", bram=1)
    with pytest.raises(DoesNotFit, match=r"tiny: block RAM: needs \d+ EBR \(DP16KD\) .*budget 1$"):
        explore(qnet, tiny)


BIG_NET = '''
import numpy as np
from cnnforge.hw.frontend.network import Flatten, Linear, ReLU, Sequential

network = Sequential(Flatten(), Linear(4096, 64), ReLU(), Linear(64, 10), input_shape=(1, 64, 64))
rng = np.random.default_rng(0)
network.load_state_dict({k: (rng.standard_normal(s) * 0.02).astype(np.float32)
                         for k, s in network.state_dict_shapes().items()})
calibration = rng.standard_normal((8, 1, 64, 64)).astype(np.float32)
'''


def test_big_network_does_not_fit(tmp_path):
    """A network whose weights (262 Kbyte) fit neither the UP5K's block RAM nor its SPRAM:
    exit status 2, one line naming the memory, the need and the budget, and no file
    written."""
    net = tmp_path / "big.py"
    net.write_text(BIG_NET)
    proc = subprocess.run([str(SCRIPT), "explore", str(net), "--device", "up5k"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("cnnforge: error: no design fits up5k: ")
    label, need = lines[0].split(": needs ")[0].split(": ")[-1], lines[0].split("needs ")[1]
    budget = {"block RAM": 30, "SPRAM": 4}[label]
    assert int(need.split()[0]) > budget and lines[0].endswith(f"budget {budget}")
    assert not (tmp_path / "build").exists()



def test_depthwise_and_add_layers(tmp_path):
    """A MobileNetV2 block (expand, depthwise, project, residual add, global average pool):
    every design runs the depthwise and pooling layers OR and the add ADD, the dense layers any
    dataflow; the fastest design and the fastest with a stationary dataflow, compiled from
    their plans, run bit-exactly in the Amaranth simulator with the counters the exploration
    predicted."""
    qnet = quantize(inverted_residual(c=5, expand=3, residual=True))
    ex = explore(qnet, "lfe5u-25f", sizes=[2, 3, 4])
    program = ex.programs[0]
    fixed = {i: ("add" if layer.type == "Add" else "or") for i, layer in enumerate(program.layers)
             if layer.type == "Add" or layer.algorithm == "depthwise"}
    assert sorted(fixed.values()) == ["add", "or", "or"]    # the add, depthwise 3x3, the pool
    for design in ex.designs:
        assert all(design.dataflows[i] == df for i, df in fixed.items())
    stationary = [d for d in ex.pareto if {"ir", "wr"} & set(d.dataflows)]
    assert stationary
    for design in [ex.best] + stationary[:1]:
        check_plan_in_rtl(qnet, design, random_images(qnet, 1, 5))
    # the roofline plots the layers that make MACs (not the add)
    points, _ = plot_roofline(program, tmp_path / "roofline.png")
    assert [p["layer"] for p in points] == [layer.name for layer in program.layers
                                            if layer.type != "Add"]
    assert (tmp_path / "roofline.png").read_bytes()[:4] == b"\x89PNG"


def test_time_shared_requantizer_designs(qnet, explorations):
    """On the UP5K the arrays that leave the requantizer fewer than four SB_MAC16 (4x3: six
    for the PEs) are explored with it time-shared over two (``ppu_interval`` 2, output reuse
    only); the fastest such design, compiled from its plan, runs bit-exactly in the Amaranth
    simulator with the counters the exploration predicted."""
    ex = explorations["up5k"]
    dev = DEVICES["up5k"]
    shared = [d for d in ex.designs if d.config().ppu_interval == 2]
    assert (4, 3) in {(d.rows, d.cols) for d in shared}
    for d in shared:
        assert dev.ppu_interval(d.rows, d.cols) == 2 and set(d.dataflows) == {"or"}
        assert d.dsp == FAMILIES["ice40"].pe_dsps(d.pes) + 2
    design = min((d for d in shared if (d.rows, d.cols) == (4, 3)), key=lambda d: d.cycles)
    _confirm(design, qnet, names_of(qnet), FAMILIES["ice40"])
    assert load_plan(design.plan)["config"].ppu_interval == 2
    check_plan_in_rtl(qnet, design, random_images(qnet, 1, 3))


def test_spram_placement():
    """The keyword-spotting DS-CNN on a 2x2 UP5K array: block RAM cannot hold its feature maps
    and weights, so the exploration puts them in SPRAM as ``cnnforge synth`` does
    (:func:`fit_memories`: the same placement, block RAM and SPRAM counts as the memory plan's)
    and the plan records it."""
    net = quantize(load_network(REPO / "examples" / "mlperf_tiny" / "kws_ref_model.tflite"))
    ex = explore(net, "up5k", sizes=[2])
    design = ex.best
    assert (design.rows, design.cols) == (2, 2) and design.spram > 0
    plan = load_plan(design.plan)
    program, mplan = fit_memories(net, dataclasses.replace(plan["config"],
                                                           spram_feature_maps=False,
                                                           spram_weights=False), "up5k",
                                  tiles=plan["tiles"], dataflows=plan["dataflows"],
                                  algorithms=plan["algorithms"])
    assert program.config == plan["config"]
    assert mplan.kinds["SPRAM"].used == design.spram
    assert mplan.kinds["EBR"].used == design.bram       # (its descriptor ROM is in logic)
    assert network_model(program)[1] == design.cycles
