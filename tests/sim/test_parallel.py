"""One run over several simulator processes (:mod:`cnnforge.sim.parallel`): the split, the
merge, and on Verilator the same logits, layer maps and per-image cycle counts from one process,
from ``workers`` local processes and from the workers of a Dask ``LocalCluster``, under stream
gaps and back-pressure; ``cnnforge run --workers/--dask`` gives the same report."""

import json
from pathlib import Path

import numpy as np
import pytest
from distributed import LocalCluster
from hypothesis import given
from hypothesis import strategies as st

from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.tools.cli import main
from cnnforge.sim import parallel
from cnnforge.sim.accel import AcceleratorSim, SimulationStall
from tests.helpers import build_dir, check_sim, compile_tight, conv_net, random_images

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits" / "net.py"


@given(st.integers(0, 600), st.integers(1, 40))
def test_split(count, parts):
    slices = parallel.split(count, parts)
    assert len(slices) == min(parts, count)
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(count))
    sizes = [s.stop - s.start for s in slices]
    assert not sizes or (min(sizes) >= 1 and max(sizes) - min(sizes) <= 1)


def _part(first, n, stalled=None):
    out = {"logits": np.full((n, 2), first, np.int8), "debug": np.full((n, 3), first, np.uint8),
           "cycles": np.arange(first, first + n), "sim_cycles": np.array(100 * n),
           "wall_seconds": np.array(0.1 * n), "cpu_seconds": np.array(0.2 * n)}
    if stalled is not None:
        out.update(stalled_image=np.array(stalled), stalled_stream=np.array("output"),
                   stalled_debug=np.zeros(5, np.uint8), stalled_logits=np.array(1),
                   stalled_cycle=np.array(77))
    return first, out


def test_merge():
    out = parallel.merge([_part(0, 3), _part(3, 2), _part(5, 2)])
    assert out["logits"][:, 0].tolist() == [0, 0, 0, 3, 3, 5, 5]
    assert out["debug"].shape == (7, 3) and out["cycles"].tolist() == list(range(7))
    assert out["sim_cycles"] == 700 and out["processes"] == 3
    assert out["wall_seconds"] == pytest.approx(0.3)            # the longest part
    assert out["cpu_seconds"] == pytest.approx(1.4)             # all parts
    assert "stalled_image" not in out
    # the first image that stalled, numbered in the whole stream
    out = parallel.merge([_part(0, 3), _part(3, 2, stalled=1), _part(5, 2, stalled=0)])
    assert out["stalled_image"] == 4 and out["stalled_cycle"] == 77


@pytest.fixture(scope="module")
def random_sim():
    qnet = quantize(conv_net(11, (2, 7, 8), m=5, pool=True))
    program = compile_tight(qnet, 3, 2)
    return program, random_images(qnet, 7, 4), AcceleratorSim(program,
                                                               build_dir("parallel-3x2")).build()


def _same(a, b):
    assert np.array_equal(a.logits, b.logits)
    assert np.array_equal(a.cycles, b.cycles)
    assert len(a.layers) == len(b.layers)
    for per_a, per_b in zip(a.layers, b.layers):
        for (counters_a, map_a), (counters_b, map_b) in zip(per_a, per_b):
            assert counters_a == counters_b and np.array_equal(map_a, map_b)


def test_workers_and_dask_match_one_process(random_sim):
    """Seven images, 30 % input gaps and 40 % back-pressure: one process, three local processes
    and two Dask worker processes give the same bits and cycle counts, all golden."""
    program, images, sim = random_sim
    options = dict(gaps=0.3, backpressure=0.4, seed=9)
    one = sim.run(images, name="one", **options)
    check_sim(program, images, one)
    assert one.processes == 1
    seen = []
    three = sim.run(images, name="three", workers=3, progress=seen.append, **options)
    assert three.processes == 3 and seen[-1] == len(images)
    _same(one, three)
    assert abs(three.sim_cycles - one.sim_cycles) < 10 * 3       # the parts' start-up only
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        on_dask = sim.run(images, dask=cluster.scheduler_address, **options)
        # a second run finds the simulator already on the workers
        again = sim.run(images[:2], dask=cluster.scheduler_address, **options)
    assert on_dask.processes == 2 and again.processes == 2
    _same(one, on_dask)
    assert np.array_equal(again.logits, one.logits[:2])
    # the watchdog still ends a stalled part, and the stall is reported
    with pytest.raises(SimulationStall, match="^image 0: the accelerator stalled"):
        sim.run(images, name="stall", workers=2, stall_after=3, **options)
    with pytest.raises(ValueError, match="workers=0: give at least 1"):
        sim.run(images, workers=0)


def test_cli_workers_and_dask(tmp_path):
    """``cnnforge run`` of the digits network in one process and on a Dask cluster (two worker
    processes): the same report but for the speed figures."""
    reports = {}
    build = build_dir("digits-4x4")               # the CLI tests' build (tests/test_cli.py)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        for name, extra in (("one", ["--workers", "1"]),
                            ("dask", ["--dask", cluster.scheduler_address])):
            out = tmp_path / f"{name}.json"
            assert main(["run", str(DIGITS), "--images", "9", "--gaps", "0.2", "--backpressure",
                         "0.2", "--build-dir", str(build), "--json", str(out), *extra]) == 0
            reports[name] = json.loads(out.read_text())
    speed = {"simulated_cycles_per_second", "simulator_processes",
             "simulated_cycles_per_process_second"}
    assert [reports[name]["simulator_processes"] for name in reports] == [1, 2]
    assert ({k: v for k, v in reports["dask"].items() if k not in speed}
            == {k: v for k, v in reports["one"].items() if k not in speed})
    assert reports["one"]["rtl_golden_mismatches"] == 0
    assert main(["run", str(DIGITS), "--workers", "0"]) == 2
