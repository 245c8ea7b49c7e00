"""Command line (``cnnforge.hw.tools.cli``): ``verilog`` and ``run`` on the bundled digits network, in
process through :func:`main` and as the installed ``cnnforge`` script; user errors exit with
status 2 and one ``cnnforge: error:`` line, no traceback, and no output file left behind."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnforge.hw.models.perf import network_model
from cnnforge.hw.tools.cli import _run_report, main
from cnnforge.hw.tools.common import atomic_write
from cnnforge.hw.compiler.program import AcceleratorConfig, compile_network
from cnnforge.hw.frontend.loader import load_network
from cnnforge.hw.frontend.quantize import quantize
from cnnforge.sim import runner
from cnnforge.sim.accel import RTLResult
from cnnforge.sim.golden import run_quantized

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits" / "net.py"
SCRIPT = Path(sys.executable).parent / "cnnforge"
# the same design as tests/sim/test_accelerator_rtl.py's digits 4x4: one Verilator build
BUILD = runner.build_root() / "test" / "digits-4x4"


def cli(*args, cwd=None):
    """Run the installed script; returns (exit status, stdout, stderr)."""
    proc = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)
    return proc.returncode, proc.stdout, proc.stderr


def assert_user_error(status, stderr, message):
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cnnforge: error: "), lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def digits():
    net = load_network(DIGITS)
    return net, quantize(net)


# ------------------------------------------------------------------------------------------------
# verilog


def test_verilog_in_process(tmp_path, capsys):
    out = tmp_path / "sub" / "acc.v"
    assert main(["verilog", str(DIGITS), "-o", str(out), "--rows", "2", "--cols", "3"]) == 0
    text = out.read_text()
    assert "module accelerator" in text
    assert "endmodule" in text
    assert f"wrote {out}: 2x3 PE array, 3 layers" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["acc.v"]      # no temporary left


def test_verilog_script(tmp_path):
    out = tmp_path / "acc.v"
    status, stdout, stderr = cli("verilog", DIGITS, "-o", out, cwd=tmp_path)
    assert status == 0, stderr
    assert "module accelerator" in out.read_text()
    assert "4x4 PE array" in stdout


# ------------------------------------------------------------------------------------------------
# run

REPORT_KEYS = {"images", "float_accuracy", "int8_accuracy", "rtl_accuracy",
               "rtl_golden_mismatches", "cycles_per_image", "ideal_cycles_per_image",
               "pe_utilization", "array", "layers"}
LAYER_KEYS = {"name", "type", "macs", "cycles", "ideal_cycles", "dataflow", "algorithm"}


def check_report(report, outputs, digits):
    net, qnet = digits
    assert REPORT_KEYS <= set(report), REPORT_KEYS - set(report)
    assert report["images"] == 5
    assert report["rtl_golden_mismatches"] == 0
    for key in ("float_accuracy", "int8_accuracy", "rtl_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    assert report["rtl_accuracy"] == report["int8_accuracy"]
    program = compile_network(qnet, AcceleratorConfig(4, 4))
    assert report["array"] == [4, 4]
    assert report["ideal_cycles_per_image"] == program.ideal_cycles
    assert report["cycles_per_image"] >= program.ideal_cycles
    assert report["pe_utilization"] == pytest.approx(
        program.ideal_cycles / report["cycles_per_image"])
    assert 0 < report["pe_utilization"] <= 1
    assert [layer["name"] for layer in report["layers"]] == ["0+1+2", "3+4+5", "7"]
    for entry, layer in zip(report["layers"], program.layers):
        assert LAYER_KEYS <= set(entry), LAYER_KEYS - set(entry)
        assert entry["type"] == layer.type
        assert entry["macs"] == layer.macs
        assert entry["ideal_cycles"] == -(-layer.macs // 16)
        assert entry["cycles"] >= entry["ideal_cycles"]
        assert entry["dataflow"] == "or"
        assert isinstance(entry["algorithm"], str) and entry["algorithm"]
    assert sum(entry["cycles"] for entry in report["layers"]) <= report["cycles_per_image"]
    # the logits written are the golden model's, for the first five test images
    x, _ = net.test_data()
    golden = run_quantized(qnet, qnet.quantize_input(x[:5]))[-1]
    assert outputs.dtype == np.int8 and outputs.shape == (5, 10)
    assert np.array_equal(outputs, golden)


def test_run_in_process(tmp_path, capsys, digits):
    report_file, outputs_file = tmp_path / "report.json", tmp_path / "out" / "logits.npy"
    status = main(["run", str(DIGITS), "--images", "5", "--json", str(report_file),
                   "--outputs", str(outputs_file), "--build-dir", str(BUILD)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "RTL/golden mismatches   0 images" in out
    check_report(json.loads(report_file.read_text()), np.load(outputs_file), digits)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["logits.npy", "out", "report.json"]


def test_run_script(tmp_path, digits):
    """The installed script, with stream gaps and back-pressure (same build as above)."""
    report_file, outputs_file = tmp_path / "report.json", tmp_path / "logits.npy"
    status, stdout, stderr = cli("run", DIGITS, "--images", 5, "--json", report_file,
                                 "--outputs", outputs_file, "--build-dir", BUILD,
                                 "--gaps", 0.3, "--backpressure", 0.4, cwd=tmp_path)
    assert status == 0, stdout + stderr
    check_report(json.loads(report_file.read_text()), np.load(outputs_file), digits)


# ------------------------------------------------------------------------------------------------
# user errors


@pytest.fixture
def files(tmp_path):
    """Input files for the error cases, and the output paths that must not appear."""
    np.save(tmp_path / "wrong.npy", np.zeros((3, 1, 7, 7), np.float32))
    np.save(tmp_path / "good.npy", np.zeros((3, 1, 8, 8), np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(3, np.int64))
    np.save(tmp_path / "labels2.npy", np.zeros(2, np.int64))
    (tmp_path / "notnpy.npy").write_text("not an array")
    nan = np.zeros((3, 1, 8, 8), np.float32)
    nan[1, 0, 2, 5] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    inf = np.zeros((4, 1, 8, 8), np.float32)
    inf[3, 0, 7, 0] = -np.inf
    np.save(tmp_path / "inf.npy", inf)
    (tmp_path / "raising.py").write_text("raise RuntimeError('boom in the network file')\n")
    (tmp_path / "empty.py").write_text("x = 1\n")
    return tmp_path


ERRORS = {
    "missing-net": (["run", "{d}/nope.py"], "no such network file"),
    "inputs-shape": (["run", "{net}", "--inputs", "{d}/wrong.npy"],
                     "inputs have shape (1, 7, 7) per image, the network expects (1, 8, 8)"),
    "inputs-unreadable": (["run", "{net}", "--inputs", "{d}/notnpy.npy"], "cannot read inputs"),
    "labels-without-inputs": (["run", "{net}", "--labels", "{d}/labels.npy"],
                              "--labels needs --inputs"),
    "labels-count": (["run", "{net}", "--inputs", "{d}/good.npy", "--labels",
                      "{d}/labels2.npy"], "2 labels for 3 inputs"),
    "net-raises": (["run", "{d}/raising.py"],
                   "failed to import: RuntimeError: boom in the network file"),
    "net-without-network": (["run", "{d}/empty.py"], "defines no module-level `network`"),
    "rows-0": (["run", "{net}", "--rows", "0"], "array 0x4: rows and cols must be in 1..64"),
    "images-0": (["run", "{net}", "--images", "0"], "--images must be >= 1, got 0"),
    "buffer-too-small": (["run", "{net}", "--buffer-bytes", "8"],
                         "even the smallest tile needs 16 bytes"),
    "inputs-nan": (["run", "{net}", "--inputs", "{d}/nan.npy"],
                   "nan.npy: inputs holds nan at index (1, 0, 2, 5); give finite values"),
    "calibration-inf": (["run", "{net}", "--calibration", "{d}/inf.npy"],
                        "inf.npy: calibration data holds -inf at index (3, 0, 7, 0)"),
    "golden-inputs-nan": (["golden", "{net}", "--inputs", "{d}/nan.npy"],
                          "inputs holds nan at index (1, 0, 2, 5)"),
    "gaps-1": (["run", "{net}", "--gaps", "1.0"],
               "--gaps must be a probability in [0, 1) (1 stops the stream for good), got 1.0"),
    "gaps-negative": (["sim", "{net}", "--gaps", "-0.5"], "--gaps must be a probability"),
    "backpressure-1": (["run", "{net}", "--backpressure", "1"],
                       "--backpressure must be a probability in [0, 1)"),
}


def error_args(case, d):
    args, message = ERRORS[case]
    args = [a.format(d=d, net=DIGITS) for a in args]
    if args[0] == "golden":
        return args + ["--outputs", str(d / "out" / "o.npy")], message
    return args + ["--json", str(d / "out" / "r.json"), "--outputs", str(d / "out" / "o.npy"),
                   "--build-dir", str(d / "build")], message


def assert_no_output(d):
    assert not (d / "out").exists() or not any((d / "out").iterdir())
    assert not (d / "build").exists()


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_error_in_process(case, files, capsys):
    args, message = error_args(case, files)
    status = main(args)
    assert_user_error(status, capsys.readouterr().err, message)
    assert_no_output(files)


@pytest.mark.parametrize("case", ["missing-net", "inputs-shape", "labels-without-inputs",
                                  "net-raises", "rows-0"])
def test_user_error_script(case, files):
    args, message = error_args(case, files)
    status, _, stderr = cli(*args, cwd=files)
    assert_user_error(status, stderr, message)
    assert_no_output(files)


def test_verilog_error_leaves_no_file(tmp_path):
    out = tmp_path / "acc.v"
    status, _, stderr = cli("verilog", DIGITS, "-o", out, "--rows", "65", cwd=tmp_path)
    assert_user_error(status, stderr, "array 65x4: rows and cols must be in 1..64")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_follows_the_umask(tmp_path, umask):
    """Output files get the mode open() would give them (mkstemp's temporaries are 0600)."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "r.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    """An output whose writing fails half way leaves neither the file nor a temporary."""
    target = tmp_path / "report.json"

    def write(tmp):
        Path(tmp).write_text("{ half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []
    # an existing file is kept intact
    target.write_text("old")
    with pytest.raises(OSError):
        atomic_write(target, write)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_saturating_inputs_warn(tmp_path, capsys):
    """Inputs far outside the calibrated range (0..254 where the digits expect 0..16) run, with
    one warning line giving the figures."""
    x = np.random.default_rng(0).integers(0, 255, (2, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["golden", str(DIGITS), "--inputs", str(tmp_path / "x.npy")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnforge: warning: ")
    assert "of the input values saturate int8 (values 0..254" in err[0], err[0]


def test_zero_range_calibration_warns(tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.zeros((4, 1, 8, 8), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    status = main(["golden", str(DIGITS), "--calibration", str(tmp_path / "c.npy"), "--inputs",
                   str(tmp_path / "x.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert "c.npy: calibration data has a zero range (every value 0)" in err[0], err
    # an input scale of ~1e-8 then makes the first layer's bias unrepresentable: one line
    assert status == 2 and err[1:] == ["cnnforge: error: layer 0 (Conv2d): accumulator could "
                                       "overflow int32 (bias too large for its scale)"], err


def test_report_utilization_is_multiplier_use(digits):
    """A Winograd layer's utilization counts the multiplications it does (never above 100 %),
    its MAC-equivalent throughput the MACs of the direct convolution (above 100 % when
    Winograd wins). The counters come from the analytic model, which equals the RTL's
    (tests/sim/test_winograd_rtl.py)."""
    net, qnet = digits
    program = compile_network(qnet, AcceleratorConfig(2, 2, algorithm="winograd"))
    assert "winograd" in [layer.algorithm for layer in program.layers]
    models, _ = network_model(program)
    counters = [model.counters() for model in models]
    x, _ = net.test_data()
    xq = qnet.quantize_input(x[:1])
    golden = run_quantized(qnet, xq)
    total = sum(c["cycles"] for c in counters) + 10
    result = RTLResult(logits=golden[-1].reshape(1, -1), cycles=np.array([total]),
                       layers=[[(c, None) for c in counters]], sim_cycles=0, wall_seconds=0.0)
    args = argparse.Namespace(net="digits")
    report = _run_report(args, program, qnet, None, np.zeros(1, np.int64), golden, result,
                         {"logits": 0, "layers": {}}, {})
    for entry, layer in zip(report["layers"], program.layers):
        assert 0 < entry["pe_utilization"] <= 1, entry
        busy = -(-layer.multiplications // program.config.pes)
        assert entry["pe_utilization"] == pytest.approx(busy / entry["cycles"])
        if layer.algorithm == "winograd":
            assert entry["mac_throughput"] > entry["pe_utilization"]
    assert 0 < report["pe_utilization"] < report["mac_throughput"]
    assert report["pe_utilization"] <= 1
    assert all(0 < row["pe_utilization"] <= 1 for row in report["by_type"].values()
               if row["pe_utilization"] is not None)


def test_preflight_refuses_runaway_designs(tmp_path, capsys):
    """A network whose weights would take GBs to elaborate, and a simulation the model predicts
    at an hour: one line with the figures, before any elaboration or build."""
    big = tmp_path / "big.py"
    big.write_text(
        "import numpy as np\n"
        "from cnnforge.hw.frontend.network import Flatten, Linear, Sequential, Conv2d, ReLU\n"
        "network = Sequential(Flatten(), Linear(1 * 64 * 64, 640), input_shape=(1, 64, 64))\n"
        "rng = np.random.default_rng(0)\n"
        "network.load_state_dict({k: rng.standard_normal(v).astype(np.float32) * 0.01\n"
        "                         for k, v in network.state_dict_shapes().items()})\n"
        "calibration = rng.standard_normal((4, 1, 64, 64)).astype(np.float32)\n")
    out = tmp_path / "acc.v"
    assert main(["verilog", str(big), "-o", str(out), "--buffer-bytes", "16384"]) == 2
    err = capsys.readouterr().err
    assert "2,621,440 weights (layer 1 (Linear) holds the most) would take about 3 GB" in err
    assert "--force goes on anyway" in err and err.count("\n") == 1 and not out.exists()
    # 8,000 inputs of the keyword-spotting model: 232,653 cycles each, over an hour
    kws = DIGITS.parent.parent / "mlperf_tiny" / "kws_ref_model.tflite"
    np.save(tmp_path / "x.npy", np.zeros((8000, 49, 10, 1), np.int8))
    assert main(["run", str(kws), "--inputs", str(tmp_path / "x.npy"), "--images", "8000",
                 "--build-dir", str(tmp_path / "b"), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "the simulation would take about 1.3 h: the model predicts 232,653 cycles" in err, err
    assert "x 8000 images" in err and "--force runs it anyway" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
