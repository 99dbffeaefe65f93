"""The README's backbone table: for every registered backbone at its default size, an untrained
(weights=None) bundle made by the real export path (ONNX FP32 with its parity check, FP16, both
INT8 flavours, the precision table), then parameters, MFLOPs, ONNX size and the ONNX Runtime INT8
latency from ``edgecat bench``, all bundles benched one after another in one run.

    .venv/bin/python benchmarks/backbones.py OUT_DIR --calib ../shared/data/cats-vs-dogs/train \\
        --images ../shared/data/cats-vs-dogs/validation --json benchmarks/results/backbones.json

Untrained weights are architecturally identical to trained ones, so right for size and latency,
not for accuracy. Existing bundles in OUT_DIR are reused (delete them to rebuild).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

log = logging.getLogger("backbones")


def mflops(model: Any) -> float:
    """Floating-point operations of one 1-image forward pass (a multiply-add counts 2), as the
    TensorFlow profiler counts them on the frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    h, w, c = model.input_shape[1:]
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec((1, h, w, c), tf.float32)))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts).total_float_ops / 1e6


def build(root: Path, name: str, calib: str, calib_size: int, images: str, limit: int,
          fp16_tolerance: float) -> dict[str, Any]:
    """One bundle through ONNX FP32 -> FP16 -> INT8 -> precision table; returns its static figures."""
    from conftest import _make_bundle

    from edgecat.bundle import Bundle
    from edgecat.export.fp16 import export_fp16
    from edgecat.export.precision_table import precision_table
    from edgecat.export.quantize import quantize_all
    from edgecat.models import get_backbone
    from edgecat.runtime.keras.loader import load_keras_model

    spec = get_backbone(name)
    t0 = time.perf_counter()
    if not (root / "edgecat.json").exists():
        _make_bundle(root, name, spec.default_size, None, onnx=True)
    bundle = Bundle.open(root)
    if not bundle.has("onnx-fp16"):
        export_fp16(bundle, tolerance=fp16_tolerance)
    if not bundle.has("onnx-int8"):
        quantize_all(bundle, calib=calib, calib_size=calib_size)
    table = precision_table(bundle, data=images, limit=limit)
    model = load_keras_model(bundle.artifact_path("keras"))
    a = bundle.artifacts
    return {
        "backbone": name, "size": spec.default_size, "preprocessing": spec.preprocessing,
        "params": int(model.count_params()), "mflops": round(mflops(model), 1),
        "onnx_mb": round(a["onnx-fp32"]["bytes"] / 1e6, 1), "int8_mb": round(a["onnx-int8"]["bytes"] / 1e6, 1),
        "fp32_parity": a["onnx-fp32"]["parity"]["max_abs_diff"], "fp16_parity": a["onnx-fp16"]["parity"]["max_abs_diff"],
        "precision_table": {r.precision: {"agreement": r.agreement, "max_prob_diff": r.max_prob_diff}
                            for r in table.rows},
        "build_seconds": round(time.perf_counter() - t0, 1),
    }


def bench_int8(root: Path, images: str, seconds: float) -> dict[str, Any]:
    from edgecat.bench import BenchConfig, run_bench

    cfg = BenchConfig(backends=["onnxruntime"], precisions=["int8"], batches=[1], images=images,
                      seconds=seconds)
    (r,) = run_bench(root, cfg).results
    if r.status != "ok":
        return {"status": r.status, "reason": r.reason}
    return {"status": "ok", "model_p50_ms": round(r.model_only.p50, 2), "e2e_p50_ms": round(r.end_to_end.p50, 2),
            "e2e_p90_ms": round(r.end_to_end.p90, 2), "iters": r.model_only.iters}


def main() -> None:
    from edgecat.models import BACKBONES

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--calib", required=True, help="image folder for INT8 calibration")
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--images", required=True, help="labelled folder for the precision table and the bench")
    ap.add_argument("--limit", type=int, default=32, help="images in the precision table")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per bench phase")
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--fp16-tolerance", type=float, default=5e-2,
                    help="random weights amplify fp16 rounding (test_export uses 5e-2 too)")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = a.backbones.split(",")
    rows = {}
    for name in names:
        rows[name] = build(a.out / name, name, a.calib, a.calib_size, a.images, a.limit, a.fp16_tolerance)
        log.info("%s", json.dumps(rows[name]))
    if not a.no_bench:
        load_before = os.getloadavg()
        for name in names:  # one run, one after another: comparable with each other
            rows[name]["int8_bench"] = bench_int8(a.out / name, a.images, a.seconds)
            log.info("%s %s", name, rows[name]["int8_bench"])
        log.info("load average before %s after %s", load_before, os.getloadavg())
        rows["_load_average"] = {"before": load_before, "after": os.getloadavg()}
    if a.json:
        from edgecat.bench import machine_info
        from edgecat.fsutil import write_json

        write_json(a.json, {"machine": machine_info(), "rows": rows})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
