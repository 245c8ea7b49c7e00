"""Golden model vs ONNX Runtime on imported QDQ models: int8 logits, element by element.

Models (both int8 QDQ from ``onnxruntime.quantization.quantize_static``, per-channel weights):

* ``mobilenet_digits``: ``examples/mobilenet_digits/model_qdq.onnx`` (PyTorch export), on the
  100 images of ``test_images.npy`` and on the whole held-out split of the digits (450 images,
  ``train_test_split(test_size=0.25, random_state=0, stratify=y)``, pixels / 16);
* ``residual``: the ``onnx.helper`` residual CNN of ``tests/onnx_models.py`` (Conv, Relu,
  depthwise Conv, Clip(0, 6), Conv 1×1, Add, GlobalAveragePool, Flatten, Gemm; random
  weights), quantized here on 256 training images, on the 450 held-out images.

For each: :func:`cnnforge.sim.onnxref.compare_with_onnxruntime` with the golden model as it is
(``golden``: bit-exact with the hardware; an imported QDQ model requantizes with one rounding,
ties to even, as ONNX Runtime) and, as a what-if, with gemmlowp's double rounding (``gemmlowp``,
the requantizer of networks cnnforge quantizes itself), i.e. the identical fraction, largest
difference in output steps,
top-1 agreement, our input quantization against ONNX Runtime's, and every op alone on ONNX
Runtime's own int8 inputs; plus the top-1 accuracy of the float model, ONNX Runtime's int8
model and the golden model where there are labels. ONNX Runtime runs on the CPU provider, one
thread, default graph optimizations (its QDQ fusions: QLinearConv, QGemm, QLinearAdd,
QLinearAveragePool).

Run (about 10 s)::

    .venv/bin/python benchmarks/onnx_agreement.py

Writes ``benchmarks/results/onnx_agreement.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine_info

ROOT = Path(__file__).resolve().parent.parent
MOBILENET = ROOT / "examples" / "mobilenet_digits"
TARGET = {"identical_fraction": 0.99, "max_abs_lsb": 1, "top1_agreement": 1.0}


def measure(name, path, float_path, x, y, split):
    """Both roundings on one model and one image set; accuracies when there are labels."""
    from cnnforge.hw.frontend.loader import load_network
    from cnnforge.sim.golden import run_quantized
    from cnnforge.sim.onnxref import (compare_with_onnxruntime, onnxruntime_int8_outputs,
                                      onnxruntime_outputs)
    net = load_network(path)
    row = {"model": name, "file": str(Path(path).relative_to(ROOT)) if str(path).startswith(
        str(ROOT)) else Path(path).name, "images": split, "ops": len(net.quantized.ops)}
    row["golden"] = compare_with_onnxruntime(net, x)
    row["gemmlowp"] = compare_with_onnxruntime(net, x, rounding="gemmlowp")
    if y is not None:
        qnet = net.quantized
        golden = run_quantized(qnet, qnet.quantize_input(x))[-1].reshape(len(x), -1)
        row["accuracy"] = {
            "float_onnxruntime": float(np.mean(
                onnxruntime_outputs(float_path, x).argmax(axis=1) == y)),
            "int8_onnxruntime": float(np.mean(
                onnxruntime_int8_outputs(path, x).argmax(axis=1) == y)),
            "int8_golden": float(np.mean(golden.argmax(axis=1) == y)),
        }
    g = row["golden"]
    row["meets_target"] = (g["identical_fraction"] >= TARGET["identical_fraction"]
                           and g["max_abs_lsb"] <= TARGET["max_abs_lsb"]
                           and g["top1_agreement"] >= TARGET["top1_agreement"])
    return row


def agreement_table(rows):
    lines = ["| model | images | requantizer | identical | max LSB | differences (LSB: count) "
             "| top-1 agreement | input identical |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for rounding, label in (("golden", "golden (one rounding, ties to even; = hardware)"),
                                ("gemmlowp", "gemmlowp double rounding (what-if)")):
            c = r[rounding]
            hist = ", ".join(f"{k}: {v}" for k, v in c["histogram"].items())
            lines.append(f"| {r['model']} | {r['images']} | {label} | "
                         f"{c['identical_fraction']:.2%} | {c['max_abs_lsb']} | {hist} | "
                         f"{c['top1_agreement']:.2%} | {c['input_identical_fraction']:.2%} |")
    return "\n".join(lines)


def per_op_table(row):
    g, w = (row[r]["per_op"] for r in ("golden", "gemmlowp"))
    lines = [f"{row['model']} ({row['images']}): each op on ONNX Runtime's int8 inputs", "",
             "| op | type | identical (golden) | max LSB | identical (gemmlowp what-if) "
             "| max LSB |",
             "|---|---|---|---|---|---|"]
    for name, op in g.items():
        lines.append(f"| {name} | {op['type']} | {op['identical_fraction']:.3%} | "
                     f"{op['max_abs_lsb']} | {w[name]['identical_fraction']:.3%} | "
                     f"{w[name]['max_abs_lsb']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" /
                                              "onnx_agreement.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.onnx_models import digits_split, quantize_qdq, residual_model, residual_weights

    start = time.perf_counter()
    x_train, _, x_test, y_test = digits_split()
    rows = []
    qdq, flt = MOBILENET / "model_qdq.onnx", MOBILENET / "model.onnx"
    rows.append(measure("mobilenet_digits", qdq, flt, np.load(MOBILENET / "test_images.npy"),
                        np.load(MOBILENET / "test_labels.npy"), "test_images.npy (100)"))
    rows.append(measure("mobilenet_digits", qdq, flt, x_test, y_test, "held-out split (450)"))
    with tempfile.TemporaryDirectory() as tmp:
        flt = residual_model(Path(tmp) / "residual.onnx", residual_weights())
        qdq = quantize_qdq(flt, Path(tmp) / "residual_qdq.onnx", x_train[:256])
        rows.append(measure("residual (onnx.helper)", qdq, flt, x_test, None,
                            "held-out split (450)"))
    report = {"machine": machine_info("onnx", "onnxruntime", "numpy"), "target": TARGET,
              "models": rows,
              "wall_seconds": round(time.perf_counter() - start, 1)}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")

    print("\nGolden model vs ONNX Runtime, int8 logits\n")
    print(agreement_table(rows))
    for row in rows:
        if "accuracy" in row:
            a = row["accuracy"]
            print(f"\n{row['model']}, {row['images']}: accuracy float (ONNX Runtime) "
                  f"{a['float_onnxruntime']:.2%}, int8 ONNX Runtime {a['int8_onnxruntime']:.2%}, "
                  f"int8 golden {a['int8_golden']:.2%}")
    for row in rows[1:]:
        print("\n" + per_op_table(row))
    missed = [f"{r['model']} ({r['images']})" for r in rows if not r["meets_target"]]
    print(f"\nwrote {path} ({report['wall_seconds']:.0f} s)")
    if missed:
        print("below the target (>= 99% identical, <= 1 LSB, top-1 on every image): "
              + "; ".join(missed))


if __name__ == "__main__":
    main()
