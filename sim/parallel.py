"""One RTL run over many simulator processes: the images split over local processes or over the
workers of a Dask cluster, the results gathered as one process would give them.

A *part* is a contiguous slice of the run's images simulated by one process of the same build
(:mod:`cnnforge.sim.bench` over the :class:`~cnnforge.sim.harness.SimHarness`). The harness
reseeds its random source and sink from the run's seed and each image's number in the whole
stream (the stimulus's ``first_image``), so a split run moves every beat as one process does:
the logits, the layer maps *and* each image's cycle count are the same for any number of parts.

* :func:`run_local` runs the parts in ``workers`` processes on this machine (a thread each waits
  for its simulator process).
* :func:`run_dask` submits them to an existing ``dask.distributed`` cluster: the simulator
  executable is sent to every worker once (``Client.scatter(..., broadcast=True)``) and written
  to the worker's temporary folder under its hash; the workers need the same installation of
  cnnforge and cocotb as this machine (as any Dask cluster needs the code it runs).
* :func:`merge` joins the parts' results: arrays concatenated in image order, simulated cycles
  and processor time summed, the wall time the longest part's; a stall is reported for the
  first image (in stream order) that stalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from distributed import Client, as_completed

from cnnforge.sim import runner
from cnnforge.sim.harness import WRAPPER

__all__ = ["BENCH", "split", "simulate", "simulator_file", "run_local", "run_dask", "merge"]

BENCH = "cnnforge.sim.bench"
"""The cocotb test module every part runs."""


def split(count, parts):
    """Contiguous slices of ``count`` images for at most ``parts`` processes, sizes differing by
    at most one, none empty (``[]`` for no images)."""
    parts = max(1, min(parts, count))
    bounds = np.linspace(0, count, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def simulate(stimulus, sim_build, run_dir, sim=None):
    """One simulator process over one part: write ``stimulus`` where the bench reads it, run the
    bench on the build in ``sim_build``, return what it wrote.

    Parameters
    ----------
    stimulus : dict of str to array-like
        The bench's stimulus (:mod:`cnnforge.sim.bench`: images, options, ``first_image``).
    sim_build : path-like
        The folder holding the simulator build (for Verilator its executable).
    run_dir : path-like
        Working folder of this process (created): stimulus, results, progress, log.
    sim : str, optional
        ``"verilator"`` (default, ``$SIM`` honoured) or ``"icarus"``.

    Returns
    -------
    dict of str to ndarray
        The bench's results: ``logits`` (int8, (B, output_size)), ``debug`` (uint8, (B,
        debug_size)), ``cycles`` (int64, (B,)), ``sim_cycles``, ``wall_seconds``,
        ``cpu_seconds``, and the ``stalled_*`` entries after a stall.

    Raises
    ------
    AssertionError
        If the simulator died or the bench failed (:func:`cnnforge.sim.runner.check_results`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stim, results = run_dir / "stimulus.npz", run_dir / "results.npz"
    progress = run_dir / "progress"
    for path in (results, progress):
        path.unlink(missing_ok=True)
    np.savez(stim, **stimulus)
    runner.run(runner.prebuilt(sim), WRAPPER, BENCH, build_dir=sim_build, test_dir=run_dir,
               extra_env={"CNNFORGE_STIMULUS": str(stim), "CNNFORGE_RESULTS": str(results),
                          "CNNFORGE_PROGRESS": str(progress)},
               hdl_toplevel_lang="verilog")
    with np.load(results) as out:
        return {key: out[key] for key in out.files}


def simulator_file(sim_build, sim=None):
    """The file of a simulator build that running it needs: Verilator's executable (named as
    the wrapper) or Icarus' ``sim.vvp``."""
    return Path(sim_build) / ("sim.vvp" if runner.simulator(sim) == "icarus" else WRAPPER)


@contextlib.contextmanager
def _watch(files, progress):
    """While the block runs, call ``progress(total)`` whenever the sum of the numbers the bench
    writes into ``files`` (images done per part) changes."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def poll():
        last = -1
        while not stop.wait(0.2):
            done = 0
            for path in files:
                with contextlib.suppress(OSError, ValueError):
                    done += int(path.read_text())
            if done != last:
                progress(done)
                last = done

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _stimuli(images, base, parts):
    """``(first image, stimulus)`` per part: ``base`` with the part's images and number (one
    empty part for no images, as one process would run it)."""
    return [(s.start, {**base, "images": images[s], "first_image": s.start})
            for s in split(len(images), parts) or [slice(0, 0)]]


def run_local(images, base, sim_build, run_dir, *, workers=1, sim=None, progress=None):
    """The images in at most ``workers`` simulator processes on this machine.

    Parameters
    ----------
    images : ndarray, int8, shape (B, ...)
    base : dict
        The stimulus common to all parts (:mod:`cnnforge.sim.bench`'s options).
    sim_build, sim
        As :func:`simulate`.
    run_dir : path-like
        Working folder; with several parts, one subfolder ``part<i>`` each.
    workers : int
        Processes at a time (and parts).
    progress : callable(int), optional
        Called with the number of images done, while the simulation runs.

    Returns
    -------
    list of (int, dict)
        Per part, in image order: its first image and :func:`simulate`'s results.
    """
    stimuli = _stimuli(images, base, workers)
    run_dir = Path(run_dir)
    dirs = [run_dir] if len(stimuli) == 1 else [run_dir / f"part{i}" for i in range(len(stimuli))]
    with _watch([d / "progress" for d in dirs], progress), \
            ThreadPoolExecutor(max_workers=len(stimuli)) as pool:
        futures = [pool.submit(simulate, stimulus, sim_build, d, sim)
                   for (_, stimulus), d in zip(stimuli, dirs)]
        results = [future.result() for future in futures]
    return [(first, result) for (first, _), result in zip(stimuli, results)]


def simulate_shipped(executable, digest, name, stimulus, sim=None):
    """:func:`simulate` on a Dask worker: the simulator ``executable`` (bytes, sent once per
    worker) is written to ``<tmp>/cnnforge-sim/<digest>/<name>`` unless already there; the part
    runs in a temporary folder beside it, removed afterwards."""
    root = Path(tempfile.gettempdir()) / "cnnforge-sim" / digest
    target = root / name
    if not target.is_file():
        root.mkdir(parents=True, exist_ok=True)
        partial = root / f".{name}.{os.getpid()}.{threading.get_ident()}"
        partial.write_bytes(executable)
        partial.chmod(0o755)
        os.replace(partial, target)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    try:
        return simulate(stimulus, root, run_dir, sim)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def run_dask(address, images, base, sim_build, *, sim=None, progress=None):
    """The images on the workers of the Dask cluster at ``address``, one part per worker
    thread.

    Parameters
    ----------
    address : str
        The scheduler's address (``tcp://host:8786``, or a ``LocalCluster``'s
        ``scheduler_address``).
    images, base, sim_build, sim, progress
        As :func:`run_local`.

    Returns
    -------
    list of (int, dict)
        As :func:`run_local`.
    """
    executable = simulator_file(sim_build, sim)
    data = executable.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:20]
    with Client(address) as client:
        threads = sum(client.nthreads().values()) or 1
        stimuli = _stimuli(images, base, threads)
        shipped = client.scatter(data, broadcast=True)
        futures = [client.submit(simulate_shipped, shipped, digest, executable.name, stimulus,
                                 sim, pure=False)
                   for _, stimulus in stimuli]
        sizes = {future.key: len(stimulus["images"])
                 for future, (_, stimulus) in zip(futures, stimuli)}
        done = 0
        for future in as_completed(futures):
            done += sizes[future.key]
            if progress:
                progress(done)
        results = client.gather(futures)
    return [(first, result) for (first, _), result in zip(stimuli, results)]


def merge(parts):
    """Join the parts' results (:func:`run_local`, :func:`run_dask`) into what one process
    would have written: ``logits``, ``debug`` and ``cycles`` in image order; ``sim_cycles`` and
    ``cpu_seconds`` summed; ``wall_seconds`` the longest part's (they ran side by side);
    ``processes`` the number of parts; after a stall the ``stalled_*`` entries of the first
    image that stalled, numbered in the whole stream."""
    out = {key: np.concatenate([result[key] for _, result in parts])
           for key in ("logits", "debug", "cycles")}
    out["sim_cycles"] = sum(int(result["sim_cycles"]) for _, result in parts)
    out["cpu_seconds"] = sum(float(result["cpu_seconds"]) for _, result in parts)
    out["wall_seconds"] = max(float(result["wall_seconds"]) for _, result in parts)
    out["processes"] = len(parts)
    for first, result in parts:
        if "stalled_image" in result:
            out.update({key: value for key, value in result.items()
                        if key.startswith("stalled_")})
            out["stalled_image"] = first + int(result["stalled_image"])
            break
    return out
