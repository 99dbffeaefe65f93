"""ONNX Runtime vs OpenVINO vs LiteRT on the CPU, side by side in ONE process (not a test).

For each bundle: every runtime x precision the bundle has, batch 1, the same real photos, timed in
interleaved rounds (round r runs every configuration over all photos before round r+1), median ms per
image. Each runtime with edgecat's settings at ``--threads`` and at 1 thread (``edgecat-tN``) and
with the library's own defaults (a bare session / compile_model / Interpreter), so the gain from
edgecat's settings is measured, not assumed. Then ``--backend auto``'s choice (measured afresh) and
its ratio to the fastest default, and the figures against FP32 (accuracy drop, confident answers
flipped, label agreement: :mod:`edgecat.int8_guard`) of every INT8/FP16 file auto may pick.

    .venv/bin/python benchmarks/cpu_runtimes.py BUNDLE [BUNDLE...] \\
        --images ../shared/data/cats-vs-dogs/validation --threads 2 --n 40 --rounds 7 --agreement 1000

The machine may be shared: the load average before and after is recorded; ratios within one run
are what counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import int8_guard
from edgecat.select import artifact_key, candidates, choose_backend, evidence, predicted_probs


def photos(folder: Path, n: int, size: tuple[int, int]) -> np.ndarray:
    """``n`` real photos spread over the folder (deterministic), decoded and resized as deployed."""
    from edgecat import imaging

    files = imaging.list_images([folder])
    idx = np.linspace(0, len(files) - 1, n).astype(int)
    return np.stack([imaging.load_for_model(files[i], size) for i in idx])


def default_runner(backend: str, path: Path) -> Callable[[np.ndarray], Any] | None:
    """The library as a user would call it first, without edgecat: all defaults."""
    if backend == "onnxruntime":
        import onnxruntime as ort

        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return lambda x: s.run(None, {name: x.astype(np.float32)})
    if backend == "openvino":
        import openvino as ov

        req = ov.Core().compile_model(str(path), "CPU").create_infer_request()
        return lambda x: req.infer({0: x.astype(np.float32)})
    if backend == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

        def run(x: np.ndarray) -> Any:
            it.set_tensor(i, x.astype(np.float32))
            it.invoke()
            return it.get_tensor(o)

        return run
    return None


def configs(bundle: Any, threads: int) -> dict[str, Callable[[np.ndarray], Any]]:
    from edgecat.runtime import open_runtime

    out: dict[str, Callable[[np.ndarray], Any]] = {}
    for backend, prec in candidates(bundle, gpu=False):
        for n in sorted({threads, 1}, reverse=True):
            out[f"{backend}/{prec}/edgecat-t{n}"] = open_runtime(bundle, backend, prec, threads=n).infer
        default = default_runner(backend, bundle.artifact_path(artifact_key(backend, prec)))
        if default is not None:
            out[f"{backend}/{prec}/default"] = default
    return out


def interleaved(runs: dict[str, Callable[[np.ndarray], Any]], images: np.ndarray, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up outside the figures
        for x in images[:3]:
            fn(x[None])
    for _ in range(rounds):
        for name, fn in runs.items():
            for x in images:
                t0 = time.perf_counter()
                fn(x[None])
                samples[name].append((time.perf_counter() - t0) * 1000.0)
    return {k: round(statistics.median(v), 3) for k, v in samples.items()}


def fidelities(bundle: Any, limit: int, threads: int) -> dict[str, Any]:
    """Each non-FP32 file auto may pick against ONNX Runtime FP32, judged as auto judges it."""
    ev = evidence(bundle, limit)
    limits = int8_guard.limits_from_manifest(bundle.manifest)
    out: dict[str, Any] = {"images": ev.what}
    for backend, prec in candidates(bundle, gpu=False):
        if prec != "fp32":
            probs = predicted_probs(bundle, backend, prec, ev.images, threads=threads)
            v = int8_guard.judge(ev.reference, probs, ev.labels, limits, bundle.threshold)
            out[f"{backend}/{prec}"] = {**v.fidelity.to_dict(), "ok": v.ok, "rule": v.rule}
    return out


def one_bundle(path: Path, a: argparse.Namespace) -> dict[str, Any]:
    from edgecat.bundle import Bundle

    bundle = Bundle.open(path)
    images = photos(a.images, a.n, bundle.input_size)
    runs = configs(bundle, a.threads)
    ms = interleaved(runs, images, a.rounds)
    # auto measures afresh (threads: physical cores and 1), as on a user's first run
    choice = choose_backend(bundle, None, refresh=True, save=False, images=8, rounds=5,
                            validation_limit=a.agreement or 200)
    auto_ms = ms.get(f"{choice.backend}/{choice.precision}/edgecat-t{choice.threads}")
    defaults = {k: v for k, v in ms.items() if k.endswith("/default")}
    best_default = min(defaults, key=defaults.get)
    report = {"bundle": str(path), "backbone": bundle.backbone, "ms_per_image": ms,
              "auto": {"backend": choice.backend, "precision": choice.precision, "threads": choice.threads,
                       "reason": choice.reason,
                       "ms_in_this_table": auto_ms, "fastest_default": best_default,
                       "speedup_vs_fastest_default": round(defaults[best_default] / auto_ms, 3) if auto_ms else None}}
    if a.agreement:
        report["against_fp32"] = fidelities(bundle, a.agreement, a.threads)
    return report


def litert_input_types(bundle_path: Path, a: argparse.Namespace) -> dict[str, float]:
    """INT8 LiteRT with float32 input (what edgecat exports) vs uint8 input, interleaved (needs TF)."""
    import tempfile

    from edgecat.bundle import Bundle
    from edgecat.export.litert import convert
    from edgecat.export.quantize import calibration_set, load_calibration_images
    from edgecat.runtime.keras.loader import load_keras_model
    from edgecat.runtime.litert.loader import make_interpreter

    bundle = Bundle.open(bundle_path)
    cset = calibration_set(bundle, None, size=a.uint8_calib)
    data = convert(load_keras_model(bundle.artifact_path("keras")), bundle.input_size, "int8",
                   load_calibration_images(cset, bundle.input_size), int8_input="uint8")
    images = photos(a.images, a.n, bundle.input_size)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "u8.tflite").write_bytes(data)
        for name, path in (("float32-input", bundle.artifact_path("tflite-int8")), ("uint8-input", Path(tmp) / "u8.tflite")):
            for n in sorted({a.threads, 1}, reverse=True):
                it = make_interpreter(path, threads=n)
                it.allocate_tensors()
                inp, out = it.get_input_details()[0], it.get_output_details()[0]["index"]

                def run(x: np.ndarray, it: Any = it, inp: dict = inp, out: int = out) -> Any:
                    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
                    it.invoke()
                    return it.get_tensor(out)

                runs[f"{name}/t{n}"] = run
        return interleaved(runs, images, a.rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", type=Path, nargs="+")
    ap.add_argument("--images", type=Path, required=True, help="folder of real photos to time on")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--agreement", type=int, default=1000, help="validation photos INT8/FP16 files are judged on (0: skip)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--litert-uint8", action="store_true",
                    help="also convert a uint8-input INT8 .tflite (needs TensorFlow) and time it against float32 input")
    ap.add_argument("--uint8-calib", type=int, default=100, help="calibration images for that file")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from edgecat.machine import cpu_model, library_versions

    report: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "libraries": library_versions(),
                              "threads": a.threads, "photos": a.n, "rounds": a.rounds,
                              "load_before": os.getloadavg(), "results": []}
    for b in a.bundles:
        report["results"].append(one_bundle(b, a))
        if a.litert_uint8:
            report["results"][-1]["litert_int8_input_ms"] = litert_input_types(b, a)
    report["load_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
