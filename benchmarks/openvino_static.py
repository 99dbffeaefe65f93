"""edgecat's OpenVINO runtime beside plain OpenVINO compiles of the same files, in ONE process (not a test).

For each of model.onnx (FP32), model.fp16.onnx and model.int8.onnx, batch 1, the same real photos,
finely interleaved (for each photo, every configuration once, the order rotated), median ms:

- ``edgecat``          open_runtime(B, "openvino", precision, threads=T): static batch per size (default)
- ``edgecat-dynamic``  the same with ``static=False``: the file's dynamic batch compiled once
- ``plain-dynamic``    core.compile_model(file, "CPU", {LATENCY, T threads})
- ``plain-b1``         core.read_model(file), reshape to [1, H, W, 3], compile_model with {LATENCY, T threads}:
                       the best plain setup a user finds

Then FP32 accuracy on the validation folder (class sub-folders) with the static and the dynamic
compile, and the largest probability difference between them.

    .venv/bin/python benchmarks/openvino_static.py BUNDLE --images ../shared/data/cats-vs-dogs/validation \\
        --threads 2 --n 40 --rounds 7
    # edgecat and the best plain setup alone, one precision: two compiled models in the process
    .venv/bin/python benchmarks/openvino_static.py BUNDLE --images ... --precisions int8 --configs edgecat,plain-b1 --accuracy 0
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


def photos(folder: Path, n: int, size: tuple[int, int]) -> tuple[np.ndarray, list[Path]]:
    """``n`` real photos spread over the folder (0: all), decoded and resized as deployed, and their files."""
    from edgecat import imaging

    files = imaging.list_images([folder])
    if n:
        files = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
    return np.stack([imaging.load_for_model(f, size) for f in files]), files


def plain(path: Path, threads: int, batch1: bool) -> Callable[[np.ndarray], Any]:
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    model = core.read_model(str(path))
    if batch1:
        shape = model.inputs[0].get_partial_shape()
        model.reshape({model.inputs[0]: [1, *(shape[i].get_length() for i in range(1, 4))]})
    cfg = {hints.performance_mode: hints.PerformanceMode.LATENCY, props.inference_num_threads: threads}
    compiled = core.compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()
    out = compiled.outputs[0]
    return lambda x: np.array(req.infer({0: x.astype(np.float32)}, share_inputs=True)[out], copy=True)


def interleaved(runs: dict[str, Callable[[np.ndarray], Any]], images: np.ndarray, rounds: int) -> dict[str, float]:
    """Finely interleaved: for each photo every configuration runs once, in an order rotated per photo,
    so a machine whose load changes by the second (shared) loads every configuration alike."""
    samples: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for fn in runs.values():  # warm-up outside the figures
        for x in images[:5]:
            fn(x[None])
    step = 0
    for _ in range(rounds):
        for x in images:
            step += 1
            for name in names[step % len(names):] + names[:step % len(names)]:
                t0 = time.perf_counter()
                runs[name](x[None])
                samples[name].append((time.perf_counter() - t0) * 1000.0)
    return {k: round(statistics.median(v), 3) for k, v in samples.items()}


def fp32_accuracy(bundle: Any, folder: Path, threads: int, limit: int) -> dict[str, Any]:
    from edgecat.bundle import class_indices
    from edgecat.runtime import open_runtime

    images, files = photos(folder, limit, bundle.input_size)
    truth = np.array([bundle.classes.index(f.parent.name) for f in files])
    out: dict[str, Any] = {"images": len(files)}
    probs = {}
    for name, static in (("static", True), ("dynamic", False)):
        with open_runtime(bundle, "openvino", "fp32", threads=threads, static=static) as rt:
            probs[name] = np.concatenate([rt.infer(images[i:i + 1]) for i in range(len(images))])
        pred = class_indices(probs[name], bundle.threshold)
        out[f"accuracy_{name}"] = round(float(np.mean(pred == truth)), 4)
    out["max_abs_prob_diff"] = float(np.max(np.abs(probs["static"] - probs["dynamic"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accuracy", type=int, default=1000, help="validation photos for FP32 accuracy (0: skip)")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--configs", default="edgecat,edgecat-dynamic,plain-dynamic,plain-b1",
                    help="which to time; fewer compiled models alive in the process disturb each other less")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    wanted = set(a.configs.split(","))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import openvino as ov

    from edgecat import artifacts
    from edgecat.bundle import Bundle
    from edgecat.runtime import open_runtime

    bundle = Bundle.open(a.bundle)
    images, _ = photos(a.images, a.n, bundle.input_size)
    runs: dict[str, Callable[[np.ndarray], Any]] = {}
    for prec in a.precisions.split(","):
        key = artifacts.onnx(prec).key
        if not bundle.has(key):
            continue
        path = bundle.artifact_path(key)
        makers: dict[str, Callable[[], Callable[[np.ndarray], Any]]] = {
            "edgecat": lambda: open_runtime(bundle, "openvino", prec, threads=a.threads).infer_raw,
            "edgecat-dynamic": lambda: open_runtime(bundle, "openvino", prec, threads=a.threads, static=False).infer_raw,
            "plain-dynamic": lambda: plain(path, a.threads, batch1=False),
            "plain-b1": lambda: plain(path, a.threads, batch1=True)}
        for name, make in makers.items():
            if name in wanted:
                runs[f"{prec}/{name}"] = make()
    load_before = os.getloadavg()
    ms = interleaved(runs, images, a.rounds)
    ratios = {}
    for prec in ("fp32", "fp16", "int8"):
        mine = ms.get(f"{prec}/edgecat")
        plains = [ms[k] for k in (f"{prec}/plain-b1", f"{prec}/plain-dynamic") if k in ms]
        if mine:
            ratios[prec] = {"best_plain_over_edgecat": round(min(plains) / mine, 3) if plains else None,
                            "dynamic_over_static": round(ms[f"{prec}/edgecat-dynamic"] / mine, 3)
                            if f"{prec}/edgecat-dynamic" in ms else None}
    report: dict[str, Any] = {"openvino": ov.__version__, "cores": os.cpu_count(), "threads": a.threads,
                              "photos": a.n, "rounds": a.rounds, "load_before": load_before,
                              "ms_per_image": ms, "ratios": ratios, "load_after": os.getloadavg()}
    print(json.dumps(report), flush=True)  # the timings first: the accuracy pass takes a while
    if a.accuracy:
        report["fp32_accuracy"] = fp32_accuracy(bundle, a.images, a.threads, a.accuracy)
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
