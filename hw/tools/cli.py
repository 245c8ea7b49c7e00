"""``cnnforge`` command line: ``run``, ``sim`` and ``verilog``; ``synth``, ``build``, ``flash``
and ``infer`` come from :mod:`cnnforge.hw.tools.board_commands`.

Every subcommand takes NET, a Python file defining a module-level ``network`` (see
``examples/digits/net.py``) or an ONNX model (``docs/onnx.md``: a QDQ model brings its own
quantization, a float one needs ``--calibration``). User errors print one line
(``cnnforge: error: ...``) and exit with status 2, leaving no half-written output behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from cnnforge.hw.compiler.devices import DEVICES
from cnnforge.hw.compiler.memory import (device_config, fit_memories, plan_memory,
                                         with_banked_fm)
from cnnforge.hw.compiler.program import (AcceleratorConfig, ConfigError, compile_network,
                                          load_plan)
from cnnforge.hw.frontend.network import NetworkError
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.hw.models.perf import network_model
from cnnforge.hw.rtl.accelerator import Accelerator
from cnnforge.hw.tools.board_commands import add_subcommands as add_board_commands
from cnnforge.hw.tools.common import (INPUTS_HELP, NET_HELP, UserError,
                                      add_calibration_option, atomic_write, cores,
                                      load_calibrated, preflight, read_inputs)
from cnnforge.hw.tools.explore import add_parser as add_explore
from cnnforge.sim.accel import AcceleratorSim, SimulationStall, compare
from cnnforge.sim.golden import run_quantized

__all__ = ["main"]


def _compile(args):
    """Network, quantized network and program from NET and the design options (--plan wins
    over --rows/--cols/--buffer-bytes/--dataflow; its configuration fields hold unless
    ``--device`` gives its own). With ``--device`` (run, sim) the design is
    the one ``cnnforge synth`` builds for that FPGA: its array and algorithm unless given, its
    input tile buffer kind, post-processor interval and loader lanes (``Device.config``; the
    lanes unless ``--loader-lanes`` is given), SPRAM where block
    RAM is too small
    (:func:`~cnnforge.hw.compiler.memory.fit_memories`)."""
    network = load_calibrated(args.net, getattr(args, "calibration", None))
    qnet = quantize(network)
    device = DEVICES[args.device] if getattr(args, "device", None) else None
    if getattr(args, "plan", None):
        plan = load_plan(args.plan)
        cfg = plan["config"]
        if device:                  # the device's tile buffer kind, requantizer interval,
            plan["config"] = dataclasses.replace(      # loader lanes, PEs and weight banks
                cfg, lutram_buffers=device.lutram_buffers,
                ppu_interval=device.ppu_interval(cfg.rows, cfg.cols),
                loader_lanes=device.loader_lanes, product_registers=device.product_registers,
                weight_bank_words=device.weight_bank_words)
            plan["config"] = with_banked_fm(qnet, device, plan["config"])
        program = compile_network(qnet, **plan)
    else:
        extra = dict(input_buffer_bytes=args.buffer_bytes, dataflow=args.dataflow)
        if getattr(args, "loader_lanes", None):
            extra["loader_lanes"] = args.loader_lanes
        if device:                  # (the array device_config chooses unless given)
            config = device_config(qnet, device, args.rows, args.cols,
                                   algorithm=args.algorithm or device.algorithm, **extra)
        else:
            config = AcceleratorConfig(4 if args.rows is None else args.rows,
                                       4 if args.cols is None else args.cols,
                                       algorithm=args.algorithm or "auto", **extra)
        program = (fit_memories(qnet, config, device)[0] if device
                   else compile_network(qnet, config))
    return network, qnet, program


def add_design_options(p):
    """The options that choose a design: array, buffer, dataflow, or a plan file."""
    p.add_argument("--rows", type=int, help="PE array rows R (default 4, or the --device's)")
    p.add_argument("--cols", type=int, help="PE array columns C (default 4, or the "
                   "--device's)")
    p.add_argument("--buffer-bytes", type=int, default=4096,
                   help="input tile buffer capacity per ping-pong half (default 4096)")
    p.add_argument("--algorithm", choices=("auto", "direct", "winograd"),
                   help="convolution algorithm: each Conv2d's own choice (auto: Winograd "
                   "F(2x2,3x3) on 3x3 stride-1 layers when the model finds it faster), direct "
                   "everywhere, or Winograd wherever it applies (default auto, or the "
                   "--device's: direct on up5k)")
    p.add_argument("--dataflow", choices=("or", "ir", "wr", "auto"), default="or",
                   help="dataflow of every layer: output, input or weight reuse, or the "
                   "fastest per layer by the performance model (default or)")
    p.add_argument("--loader-lanes", type=int, choices=(1, 2),
                   help="values the tile loader moves per cycle (default 1, or the --device's: "
                   "2 on ECP5)")
    p.add_argument("--plan", help="a plan JSON (from `cnnforge explore`): array, buffer, and "
                   "per-layer dataflow and tiles; overrides the options above")
    p.add_argument("--force", action="store_true", help="go on with a design whose Verilog "
                   "or simulation the pre-flight check expects to run away")
    add_calibration_option(p)


def _load_inputs(args, network, qnet):
    """The inputs of a run: --inputs/--labels (in the network's own layout:
    :meth:`~cnnforge.hw.frontend.quantize.QuantizedNetwork.model_input`), else the network
    file's test_data().

    Returns
    -------
    (ndarray, ndarray, ndarray or None)
        The accelerator's int8 inputs (N, C, H, W), the float network's inputs (N, C, H, W)
        and the labels.
    """
    if args.inputs:
        x = read_inputs(args.inputs, qnet)
        y = None
        if args.labels:
            try:
                y = np.load(args.labels).astype(np.int64).reshape(-1)
            except (OSError, ValueError) as exc:
                raise UserError(f"{args.labels}: cannot read labels ({exc})") from None
            if len(y) != len(x):
                raise UserError(f"{args.labels}: {len(y)} labels for {len(x)} inputs")
    else:
        if args.labels:
            raise UserError("--labels needs --inputs")
        if not callable(getattr(network, "test_data", None)):
            what = ("a model file has no test data"
                    if str(args.net).endswith((".onnx", ".tflite")) else "defines no test_data()")
            raise UserError(f"{args.net}: {what}; give --inputs X.npy")
        x, y = network.test_data()
        x = np.asarray(x, np.float32)
    if args.images is not None:
        if args.images < 1:
            raise UserError(f"--images must be >= 1, got {args.images}")
        x = x[:args.images]
        y = None if y is None else y[:args.images]
    return qnet.model_input(x), qnet.float_input(x), y


def _add_common(p, images_default):
    p.add_argument("net", metavar="NET", help=NET_HELP)
    add_design_options(p)
    p.add_argument("--inputs", help=INPUTS_HELP + " (default: the network file's test_data())")
    p.add_argument("--labels", help="int labels .npy, shape (N,)")
    p.add_argument("--images", type=int, default=images_default,
                   help=f"number of images (default {images_default or 'all'})")
    p.add_argument("--outputs", help="write the RTL's outputs to .npy: the network's last "
                   "int8 output (a TFLite model's output tensor as TFLite Micro gives it, after "
                   "its SOFTMAX)")
    p.add_argument("--json", help="write the report to this JSON file")
    p.add_argument("--device", choices=sorted(DEVICES),
                   help="the FPGA the design is for: its array, algorithm and tile buffer kind "
                   "(as `cnnforge synth --device`), and the report's memory plan for it "
                   "(default: the --rows/--cols design, its memory plan against every device)")
    p.add_argument("--build-dir", help="simulation build folder (default build/<NET stem>)")
    p.add_argument("--gaps", type=float, default=0.0,
                   help="probability per cycle that the input stream pauses (default 0)")
    p.add_argument("--backpressure", type=float, default=0.0,
                   help="probability per cycle that the output stream is not ready (default 0)")
    p.add_argument("--no-debug", action="store_true",
                   help="do not dump and check every layer's output map (logits only)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="split the images over N simulator processes of the same build, side "
                   "by side (default: the cores); the results are those of one process")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the simulator processes on the workers of this dask.distributed "
                   "scheduler instead (tcp://host:8786); the simulator is sent to each worker "
                   "once, the results are gathered and checked here")


def cmd_verilog(args):
    _, _, program = _compile(args)
    preflight(program, force=args.force)
    text = verilog.convert(Accelerator(program), name="accelerator")

    def write(tmp):
        Path(tmp).write_text(text)
    atomic_write(args.output, write)
    print(f"wrote {args.output}: {program.config.rows}x{program.config.cols} PE array, "
          f"{len(program.layers)} layers, {len(text.splitlines())} lines")
    return 0


def cmd_run(args):
    """``cnnforge run`` and ``cnnforge sim``: compile NET, simulate its test images on the RTL,
    compare with the golden model and report accuracy, cycles and the model's prediction.

    Parameters
    ----------
    args : argparse.Namespace
        The options of :func:`_add_common`.

    Returns
    -------
    int
        Exit status: 0, or 1 when the RTL and the golden model disagree.
    """
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    t0 = time.perf_counter()
    for option, value in (("--gaps", args.gaps), ("--backpressure", args.backpressure)):
        if not 0 <= value < 1:
            raise UserError(f"{option} must be a probability in [0, 1) (1 stops the stream for "
                            f"good), got {value}")
    workers = cores() if args.workers is None else args.workers
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    network, qnet, program = _compile(args)
    xq, x, y = _load_inputs(args, network, qnet)
    preflight(program, len(xq), force=args.force, workers=None if args.dask else workers)
    build_dir = Path(args.build_dir or Path("build") / Path(args.net).resolve().parent.name)
    cfg = program.config
    console.print(f"[bold]cnnforge[/] {args.net}: {len(program.layers)} layers on a "
                  f"{cfg.rows}x{cfg.cols} PE array, {len(x)} images")
    with console.status("generating Verilog and building the simulator"):
        sim = AcceleratorSim(program, build_dir).build()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("RTL simulation", total=len(x))
        result = sim.run(xq, debug=not args.no_debug, gaps=args.gaps,
                         backpressure=args.backpressure, workers=workers, dask=args.dask,
                         progress=lambda n: bar.update(task, completed=n))
    golden, mismatches = compare(program, xq, result)
    direct_cycles = {}
    if any(layer.algorithm == "winograd" for layer in program.layers) and result.layers:
        direct_cycles = _direct_twin_cycles(program, qnet, xq, build_dir, console)
    float_pred = network.forward(x).argmax(axis=1)
    report = _run_report(args, program, qnet, y, float_pred, golden, result, mismatches,
                         direct_cycles)
    console.print(_layer_table(report))
    bad_layers = sum(mismatches["layers"].values())
    _print_summary(console, report, args, program, result, bad_layers, t0)
    if args.outputs:
        outputs = _model_outputs(qnet, result.logits)
        atomic_write(args.outputs, lambda tmp: np.save(open(tmp, "wb"), outputs))
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
        console.print(f"report: {args.json}")
    if mismatches["logits"] or bad_layers:
        console.print("[red]RTL and golden model disagree[/]")
        return 1
    return 0


def _model_outputs(qnet, last):
    """The network's outputs (:meth:`~cnnforge.hw.frontend.quantize.QuantizedNetwork.model_output`)
    from the last op's int8 values, one row per input."""
    last = np.asarray(last)
    return qnet.model_output(last.reshape((len(last),) + tuple(qnet.ops[-1].output_shape)))


def cmd_golden(args):
    """``cnnforge golden``: the bit-exact NumPy model alone (no RTL) on ``--inputs``; writes
    the network's outputs and, with ``--layers``, every op's output."""
    t0 = time.perf_counter()
    network = load_calibrated(args.net, args.calibration)
    qnet = quantize(network)
    x = read_inputs(args.inputs, qnet)
    result = run_quantized(qnet, qnet.model_input(x))
    outputs = _model_outputs(qnet, result[-1])
    classes = outputs.reshape(len(outputs), -1).argmax(axis=1)
    if args.outputs:
        atomic_write(args.outputs, lambda tmp: np.save(open(tmp, "wb"), outputs))
    if args.layers:
        names = [op.name for op in qnet.ops]
        for index, (op, values) in enumerate(zip(qnet.ops, result)):
            values = qnet.model_layout(values)
            path = Path(args.layers) / f"{index:02d}_{op.kind}_{names[index]}.npy"
            atomic_write(path, lambda tmp, v=values: np.save(open(tmp, "wb"), v))
    print(f"golden model of {args.net}: {len(qnet.ops)} ops, {len(x)} inputs, outputs "
          f"{outputs.shape[1:]} {outputs.dtype} (scale {qnet.model_output_scale:.6g}, zero "
          f"point {qnet.model_output_zero_point}), {time.perf_counter() - t0:.2f} s")
    shown = ", ".join(str(int(c)) for c in classes[:16]) + (" ..." if len(classes) > 16 else "")
    print(f"classes (argmax): {shown}")
    for what, path in (("outputs", args.outputs), ("layer outputs", args.layers)):
        if path:
            print(f"{what}: {path}")
    return 0


def _direct_twin_cycles(program, qnet, xq, build_dir, console):
    """Measured cycles of the same layers computed directly, on the same array and with the
    same dataflows (one image in RTL), for the Winograd layers' speedup.

    Parameters
    ----------
    program : Program
        The program with Winograd layers.
    qnet : QuantizedNetwork
    xq : ndarray
        The quantized input images (the first one is simulated).
    build_dir : Path
        The run's simulation build folder (the twin builds in its ``direct`` subfolder).
    console : rich.console.Console

    Returns
    -------
    dict
        ``{layer name: cycles}`` of every layer of the direct twin.
    """
    twin = compile_network(qnet, dataclasses.replace(program.config, algorithm="direct"),
                           tiles=None, dataflows={layer.name: layer.dataflow
                                                  for layer in program.layers},
                           algorithms={layer.name: "direct" for layer in program.layers})
    with console.status("measuring the Winograd layers' direct twins in RTL"):
        twin_result = AcceleratorSim(twin, build_dir / "direct").build().run(xq[:1])
    return {layer.name: counters["cycles"]
            for layer, (counters, _) in zip(twin.layers, twin_result.layers[0])}


def _run_report(args, program, qnet, y, float_pred, golden, result, mismatches, direct_cycles):
    """The report of a run (what ``--json`` writes): accuracies, cycles, plan, quantization and
    per layer the measured and modelled counters.

    Parameters
    ----------
    args : argparse.Namespace
    program : Program
    qnet : QuantizedNetwork
    y : ndarray or None
        The labels (None: no accuracies).
    float_pred : ndarray
        The float network's classes.
    golden : list of ndarray
        The golden model's outputs (:func:`cnnforge.sim.accel.compare`), logits last.
    result
        The RTL simulation's result (:meth:`cnnforge.sim.accel.AcceleratorSim.run`).
    mismatches : dict
        RTL against golden: ``"logits"`` (images) and ``"layers"`` (per layer map).
    direct_cycles : dict
        Measured cycles of the Winograd layers' direct twins (:func:`_direct_twin_cycles`).

    Returns
    -------
    dict
    """
    cfg = program.config
    n = len(float_pred)
    int8_pred = _model_outputs(qnet, golden[-1]).reshape(n, -1).argmax(axis=1)
    rtl_pred = _model_outputs(qnet, result.logits).reshape(n, -1).argmax(axis=1)
    layer_cycles = (np.array([[c["cycles"] for c, _ in per_image]
                              for per_image in result.layers]) if result.layers else None)
    ideal = program.ideal_cycles
    cycles = float(result.cycles.mean())
    report = {
        "network": str(args.net),
        "images": int(n),
        "float_accuracy": None if y is None else float(np.mean(float_pred == y)),
        "int8_accuracy": None if y is None else float(np.mean(int8_pred == y)),
        "rtl_accuracy": None if y is None else float(np.mean(rtl_pred == y)),
        "rtl_golden_mismatches": mismatches["logits"],
        "layer_mismatches": mismatches["layers"],
        "cycles_per_image": cycles,
        "ideal_cycles_per_image": ideal,
        # multiplier use (a Winograd layer multiplies less than it has MACs); the MAC-equivalent
        # throughput beside it
        "pe_utilization": (sum(-(-layer.multiplications // cfg.pes) for layer in program.layers)
                           / cycles if cycles else 0.0),
        "mac_throughput": ideal / cycles if cycles else 0.0,
        "array": [cfg.rows, cfg.cols],
        "plan": program.plan(),
        "input_scale": qnet.input_scale,
        "input_zero_point": qnet.input_zero_point,
        "output_scale": qnet.model_output_scale,
        "output_zero_point": qnet.model_output_zero_point,
        "rtl_classes": rtl_pred.tolist(),
        "macs": int(qnet.macs()),
        "simulated_cycles_per_second": result.cycles_per_second,
        "simulator_processes": result.processes,
        "simulated_cycles_per_process_second": result.cycles_per_cpu_second,
        "layers": [],
    }
    models, _ = network_model(program)
    for i, (layer, model) in enumerate(zip(program.layers, models)):
        ideal_l = -(-layer.macs // cfg.pes)
        busy = -(-layer.multiplications // cfg.pes)
        measured = None if layer_cycles is None else float(layer_cycles[:, i].mean())
        report["layers"].append({
            "name": layer.name, "type": layer.type, "macs": int(layer.macs),
            "cycles": measured, "ideal_cycles": ideal_l,
            "pe_utilization": None if not measured else busy / measured,
            "mac_throughput": None if not measured else ideal_l / measured,
            "dataflow": layer.dataflow, "algorithm": layer.algorithm,
            "multiplications": int(layer.multiplications),
            "tiling": {k: int(val) for k, val in layer.tiling.items()},
            "counters": result.layers[0][i][0] if result.layers else None,
            "model": model.counters(),
        })
        if layer.algorithm == "winograd" and layer.name in direct_cycles:
            report["layers"][-1]["direct_cycles"] = direct_cycles[layer.name]
            report["layers"][-1]["speedup"] = (direct_cycles[layer.name] / measured
                                               if measured else None)
    report["by_type"] = _by_type(program, report["layers"])
    report["memory"] = _memory_report(program, getattr(args, "device", None))
    return report


def _memory_report(program, device):
    """The report's ``memory`` section: the full plan (:func:`~cnnforge.hw.compiler.memory.
    plan_memory`) on ``device``, or, without one, the compact plan (per memory kind used/total,
    fits, reason) on every device of :data:`~cnnforge.hw.compiler.devices.DEVICES`."""
    if device:
        return {"device": device, "plans": {device: plan_memory(program, device).to_json()}}
    return {"device": None, "plans": {key: plan_memory(program, key).to_json(compact=True)
                                      for key in DEVICES}}


def _by_type(program, entries):
    """MACs, measured and ideal cycles, PE utilization (multiplier use) and MAC-equivalent
    throughput summed per layer type (conv, depthwise, pointwise, fc, avgpool, add, ...) over a
    report's layers."""
    table = {}
    for layer, entry in zip(program.layers, entries):
        row = table.setdefault(layer.ops[0].category, {"layers": 0, "macs": 0, "cycles": 0.0,
                                                       "ideal_cycles": 0, "busy_cycles": 0})
        row["layers"] += 1
        row["macs"] += entry["macs"]
        row["cycles"] += entry["cycles"] or 0.0
        row["ideal_cycles"] += entry["ideal_cycles"]
        row["busy_cycles"] += -(-layer.multiplications // program.config.pes)
    for row in table.values():
        live = row["cycles"] and row["ideal_cycles"]
        row["pe_utilization"] = row["busy_cycles"] / row["cycles"] if live else None
        row["mac_throughput"] = row["ideal_cycles"] / row["cycles"] if live else None
    return table


def _layer_table(report):
    """The per-layer table of a run's report (:func:`_run_report`).

    Parameters
    ----------
    report : dict

    Returns
    -------
    rich.table.Table
    """
    table = Table(title="per layer")
    for col in ("layer", "type", "dataflow", "MACs", "mults", "cycles", "model", "ideal",
                "util.", "Tm/Tn/Tr/Tc"):
        table.add_column(col, justify="left" if col in ("layer", "type", "dataflow")
                         else "right")
    for entry in report["layers"]:
        t = entry["tiling"]
        flow = entry["dataflow"].upper() + (" wino" if entry["algorithm"] == "winograd" else "")
        if "speedup" in entry and entry["speedup"]:
            flow += f" {entry['speedup']:.2f}x"
        table.add_row(entry["name"], entry["type"], flow, str(entry["macs"]),
                      str(entry["multiplications"]),
                      "-" if entry["cycles"] is None else f"{entry['cycles']:.0f}",
                      str(entry["model"]["cycles"]),
                      str(entry["ideal_cycles"]),
                      "-" if not entry["pe_utilization"] else f"{entry['pe_utilization']:.1%}",
                      f"{t['Tm']}/{t['Tn']}/{t['Tr']}/{t['Tc']}")
    return table


def _print_summary(console, report, args, program, result, bad_layers, t0):
    """Print a run's summary lines: accuracies, mismatches, cycles, utilization, speed.

    Parameters
    ----------
    console : rich.console.Console
    report : dict
        From :func:`_run_report`.
    args : argparse.Namespace
    program : Program
    result
        The RTL simulation's result.
    bad_layers : int
        Layer maps that differ from the golden model.
    t0 : float
        ``time.perf_counter()`` at the start of the run (for the wall time).
    """
    def pct(v):
        return "n/a (no labels)" if v is None else f"{v:.2%}"
    console.print(f"float accuracy          {pct(report['float_accuracy'])}")
    console.print(f"int8 golden accuracy    {pct(report['int8_accuracy'])}")
    console.print(f"RTL accuracy            {pct(report['rtl_accuracy'])}")
    console.print(f"RTL/golden mismatches   {report['rtl_golden_mismatches']} images"
                  + ("" if args.no_debug else f" (layer maps: {bad_layers})"))
    console.print(f"cycles per image        {report['cycles_per_image']:.0f} (ideal "
                  f"{report['ideal_cycles_per_image']}: MACs / {program.config.pes} PEs)")
    mac = ("" if abs(report["mac_throughput"] - report["pe_utilization"]) < 1e-9 else
           f" (MAC-equivalent {report['mac_throughput']:.1%}: Winograd)")
    console.print(f"PE utilization         {report['pe_utilization']:.1%}{mac}" + "".join(
        f"; {kind} {row['pe_utilization']:.1%}" for kind, row in report["by_type"].items()
        if row["pe_utilization"] is not None and row["macs"]))
    for key, plan in report["memory"]["plans"].items():
        kinds = ", ".join(f"{kind} {u['used']}/{u['total']}" for kind, u in plan["kinds"].items()
                          if u["total"] or u["used"])
        verdict = "fits" if plan["fits"] else f"does not fit: {plan['reason']}"
        console.print(f"memory on {key:<14}{kinds}; {verdict}")
    processes = ("" if result.processes == 1 else
                 f" in {result.processes} processes ({result.cycles_per_cpu_second:,.0f} per "
                 "process CPU second)")
    console.print(f"simulator speed         {result.cycles_per_second:,.0f} cycles/s{processes}"
                  f"; wall time {time.perf_counter() - t0:.1f} s")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cnnforge", description="Generate, simulate and check int8 CNN accelerators.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="the main job: Verilog, RTL simulation of test images, "
                       "accuracy and cycles, checked against the golden model")
    _add_common(p, images_default=100)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sim", help="RTL simulation against the golden model (as run; default "
                       "20 images with stream gaps and back-pressure options)")
    _add_common(p, images_default=20)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("golden", help="the bit-exact NumPy golden model alone (no RTL): "
                       "outputs and, optionally, every layer's output")
    p.add_argument("net", metavar="NET", help=NET_HELP)
    p.add_argument("--inputs", required=True, help=INPUTS_HELP)
    p.add_argument("--outputs", help="write the network's outputs to .npy (a TFLite model's "
                   "output tensor as TFLite Micro gives it)")
    p.add_argument("--layers", metavar="DIR", help="write every op's int8 output to DIR "
                   "(NN_<kind>_<layers>.npy; NHWC for a TFLite model)")
    add_calibration_option(p)
    p.set_defaults(func=cmd_golden)
    p = sub.add_parser("verilog", help="write the accelerator's Verilog")
    p.add_argument("net", metavar="NET", help=NET_HELP)
    p.add_argument("-o", "--output", required=True, help="Verilog file to write")
    add_design_options(p)
    p.set_defaults(func=cmd_verilog)
    # synth, build, flash, infer: the FPGA flow (cnnforge.hw.tools.board_commands)
    add_board_commands(sub)
    # explore: design-space exploration (cnnforge.hw.tools.explore)
    add_explore(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, NetworkError, ConfigError) as exc:
        print(f"cnnforge: error: {exc}", file=sys.stderr)
        return 2
    except SimulationStall as exc:            # the hardware hung: not the user's error
        print(f"cnnforge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
