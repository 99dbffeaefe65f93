"""INT8 fidelity and speed per runtime, each INT8 file against the same runtime's FP32 file (not a test).

For every INT8 file of a bundle, run by its own library on labelled photos (default: the bundle's
validation split, never used for calibration): accuracy FP32 vs INT8, label agreement, FP32's
confident answers (|p - 0.5| > 0.25) that INT8 flips, and the export's target verdict
(:mod:`edgecat.int8_guard`, ``EXPORT_LIMITS``); with ``--time``, batch-1 speed of FP32 and INT8
side by side, interleaved rounds in one process (median wall ms, and median process CPU ms, the
figure least moved by other processes on a shared machine), ratio FP32/INT8.

    .venv/bin/python benchmarks/int8_fidelity.py BUNDLE [BUNDLE...] [--data DIR] [--time] \
        [--runtimes ort,ov,trt,tfl] [--threads 2] [--json OUT]

Runtimes: ``ort`` ONNX Runtime on model.int8.onnx (fused x86 int8 kernels), ``ov`` OpenVINO on the
same file, ``trt`` the TensorRT flavour run as Q/DQ arithmetic (accuracy only: its speed is
TensorRT's), ``tfl`` LiteRT (XNNPACK) on model.int8.tflite, one image at a time as deployed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import int8_guard

Runner = Callable[[np.ndarray], np.ndarray]


def ort_runner(path: Path, simulate: bool, threads: int) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    if simulate:  # Q/DQ arithmetic, as TensorRT computes it (no fused int8 kernels)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def ov_runner(path: Path, fp32: bool, threads: int) -> Runner:
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    cfg: dict[Any, Any] = {hints.performance_mode: hints.PerformanceMode.LATENCY, props.inference_num_threads: threads}
    if fp32:  # OpenVINO would otherwise run FP32 in bf16/fp16 where the CPU has it
        cfg[hints.inference_precision] = "f32"
    req = ov.Core().compile_model(str(path), "CPU", cfg).create_infer_request()
    return lambda x: np.array(req.infer({0: np.ascontiguousarray(x, np.float32)})[0], copy=True)


def tfl_runner(path: Path, threads: int) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    shape: list[Any] = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:
            it.resize_tensor_input(inp["index"], list(x.shape))
            it.allocate_tensors()
            shape[0] = x.shape
        it.set_tensor(inp["index"], np.ascontiguousarray(x.astype(inp["dtype"])))
        it.invoke()
        return np.array(it.get_tensor(out["index"]), copy=True)

    return run


#: runtime -> (FP32 file, INT8 file, runner(path, is_fp32, threads)), batch size for scoring
RUNTIMES: dict[str, tuple[str, str, Callable[[Path, bool, int], Runner], int]] = {
    "ort": ("model.onnx", "model.int8.onnx", lambda p, f, t: ort_runner(p, False, t), 50),
    "ov": ("model.onnx", "model.int8.onnx", lambda p, f, t: ov_runner(p, f, t), 50),
    "trt": ("model.onnx", "model.int8-trt.onnx", lambda p, f, t: ort_runner(p, not f, t), 50),
    "tfl": ("model.fp32.tflite", "model.int8.tflite", lambda p, f, t: tfl_runner(p, t), 1),
}


def probabilities(run: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(run(x[i:i + batch])).reshape(len(x[i:i + batch]), -1)
                           for i in range(0, len(x), batch)])


def latency(named: list[tuple[str, Runner]], x: np.ndarray, rounds: int, per_round: int = 15,
            warmup: int = 5) -> dict[str, dict[str, float]]:
    """Batch 1, interleaved rounds (a burst of load hits every runner alike): median wall and
    process-CPU ms per image."""
    imgs = [x[i:i + 1] for i in range(min(per_round, len(x)))]
    wall: dict[str, list[float]] = {n: [] for n, _ in named}
    cpu: dict[str, list[float]] = {n: [] for n, _ in named}
    for _, r in named:
        for i in range(warmup):
            r(imgs[i % len(imgs)])
    for _ in range(rounds):
        for n, r in named:
            for im in imgs:
                c0, t0 = time.process_time(), time.perf_counter()
                r(im)
                wall[n].append((time.perf_counter() - t0) * 1e3)
                cpu[n].append((time.process_time() - c0) * 1e3)
    return {n: {"wall_ms": round(statistics.median(wall[n]), 3), "cpu_ms": round(statistics.median(cpu[n]), 3)}
            for n, _ in named}


def score_bundle(path: Path, data: str | None, runtimes: list[str], timed: bool, threads: int,
                 rounds: int) -> dict[str, Any]:
    from edgecat import imaging
    from edgecat.bundle import Bundle
    from edgecat.export.precision_table import labelled_set

    b = Bundle.open(path)
    files, labels, what = labelled_set(b, data, 100_000)
    if labels is None:
        raise SystemExit(f"{path}: no labelled photos (pass --data DIR)")
    loaded = imaging.load_batch(files, b.input_size)
    x = loaded.images.astype(np.float32)
    y = np.array([labels[i] for i in loaded.kept])
    out: dict[str, Any] = {"bundle": str(path), "data": what, "images": len(x), "rows": {}}
    for rt in runtimes:
        f32_name, f8_name, make, batch = RUNTIMES[rt]
        f32, f8 = path / f32_name, path / f8_name
        if not f32.exists() or not f8.exists():
            print(f"{path.name} {rt}: no {f8_name if not f8.exists() else f32_name}", file=sys.stderr)
            continue
        r32, r8 = make(f32, True, threads), make(f8, False, threads)
        p32, p8 = b.class_probs(probabilities(r32, x, batch)), b.class_probs(probabilities(r8, x, batch))
        v = int8_guard.judge(p32, p8, y, int8_guard.EXPORT_LIMITS, b.threshold)
        row: dict[str, Any] = {"file": f8_name, **v.fidelity.to_dict(), "meets_targets": v.ok, "verdict": v.reason}
        if timed and rt != "trt":
            t = latency([("fp32", r32), ("int8", r8)], x, rounds)
            row["speed"] = {**t, "ratio_wall": round(t["fp32"]["wall_ms"] / t["int8"]["wall_ms"], 2),
                            "ratio_cpu": round(t["fp32"]["cpu_ms"] / t["int8"]["cpu_ms"], 2), "threads": threads}
        out["rows"][rt] = row
        f = v.fidelity
        speed = (f"  speed x{row['speed']['ratio_wall']:.2f} wall, x{row['speed']['ratio_cpu']:.2f} cpu"
                 if "speed" in row else "")
        print(f"{path.name:16s} {rt:4s} acc FP32 {100 * f.accuracy_fp32:.2f}% INT8 {100 * f.accuracy:.2f}% "  # type: ignore[operator]
              f"({-100 * f.accuracy_drop:+.2f})  confident flips {f.confident_flips}/{f.confident}  "  # type: ignore[operator]
              f"agreement {100 * f.agreement:.2f}%{speed}  {'OK' if v.ok else 'MISS'}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--data", help="labelled photos (class folders); default: each bundle's validation split")
    ap.add_argument("--runtimes", default="ort,ov,trt,tfl")
    ap.add_argument("--time", action="store_true", help="also time FP32 vs INT8 per runtime (batch 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    runtimes = [r for r in a.runtimes.split(",") if r]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise SystemExit(f"unknown runtime {unknown[0]} (choose from {', '.join(RUNTIMES)})")
    res = {"load_before": os.getloadavg(),
           "results": [score_bundle(p, a.data, runtimes, a.time, a.threads, a.rounds) for p in a.bundles],
           "load_after": os.getloadavg()}
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
