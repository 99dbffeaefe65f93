"""Reproduce the headline latency table: batch 1, every backend/precision the bundle has, end to end
on a folder of photos (class folders give accuracy), JSON + PNG next to each other, and the latency
goals checked at the end.

    .venv/bin/python benchmarks/bench.py BUNDLE [BUNDLE...] --images ../shared/data/cats-vs-dogs/validation \\
        --out benchmarks/results

Build 224 px latency bundles first if no trained one is at hand (benchmarks/make_bundles.py). Runs
the same code as ``edgecat bench``; this script only adds the goal check and the load average.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from rich.console import Console

from edgecat.bench import BenchConfig, render_table, run_bench, write_plot

#: the latency goals (MobileNetV2 224 px, batch 1, this 2-core CPU)
GOALS = {"int8_model_p50_ms": 1.5, "int8_e2e_p50_ms": 3.0, "speedup_vs_keras_predict": 30.0}


def check_goals(report) -> list[str]:
    """One line per goal: measured figure, goal, and by how much it is missed."""
    rows = {(r.backend, r.precision): r for r in report.results if r.status == "ok" and r.batch == 1}
    int8 = rows.get(("onnxruntime", "int8"))
    out = []
    if int8 is None:
        return ["onnxruntime int8 did not run: no goal check (export --int8 first)"]

    def line(name: str, value: float | None, goal: float, lower_better: bool = True) -> str:
        if value is None:
            return f"{name}: not measured"
        ok = value <= goal if lower_better else value >= goal
        miss = "" if ok else f" (missed by {abs(value - goal):.2f}, x{(value / goal if lower_better else goal / value):.2f})"
        return f"{name}: {value:.2f} vs goal {'<=' if lower_better else '>='} {goal:g} -> {'MET' if ok else 'MISSED'}{miss}"

    out.append(line("ORT INT8 model-only p50 ms", int8.model_only.p50 if int8.model_only else None,
                    GOALS["int8_model_p50_ms"]))
    out.append(line("ORT INT8 end-to-end p50 ms", int8.end_to_end.p50 if int8.end_to_end else None,
                    GOALS["int8_e2e_p50_ms"]))
    out.append(line("ORT INT8 speedup over keras-predict (model-only p50)", int8.speedup_vs_keras_predict,
                    GOALS["speedup_vs_keras_predict"], lower_better=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--images", default=None, help="photos to time end to end (class folders add accuracy)")
    ap.add_argument("--backends", default="keras-predict,keras,onnxruntime")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--iters", type=int, default=300, help="timed runs per fast backend")
    ap.add_argument("--keras-iters", type=int, default=30, help="timed runs for the (slow) Keras backends")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-spinning", action="store_true", help="ORT worker threads sleep between ops")
    ap.add_argument("--reduced-decode", action="store_true", help="libjpeg 1/2-1/8 scale decode of large JPEGs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=170)
    a.out.mkdir(parents=True, exist_ok=True)
    options = {"spinning": not a.no_spinning, **({"threads": a.threads} if a.threads else {})}
    backends = a.backends.split(",")
    for path in a.bundles:
        console.print(f"load average before {path.name}: {os.getloadavg()}")
        reports = []
        # the Keras backends are 10-200x slower: fewer iterations, same code path
        groups = [[b for b in backends if b.startswith("keras")], [b for b in backends if not b.startswith("keras")]]
        for group, iters in zip(groups, (a.keras_iters, a.iters)):
            if group:
                cfg = BenchConfig(backends=group, precisions=a.precisions.split(","),
                                  batches=[int(b) for b in a.batches.split(",")], images=a.images,
                                  warmup=a.warmup, iters=iters, options=options,
                                  reduced_decode=a.reduced_decode or None)
                reports.append(run_bench(path, cfg))
        report = reports[0]
        for extra in reports[1:]:
            report.results.extend(extra.results)
        report.config["iters"] = {"keras": a.keras_iters, "other": a.iters}
        report.config["backends"] = backends
        from edgecat.bench import add_speedups

        add_speedups(report.results)
        report.machine["load_avg_after"] = list(os.getloadavg())
        console.print(render_table(report))
        name = path.name
        report.write_json(a.out / f"{name}.json")
        write_plot(report, a.out / f"{name}.png")
        if report.bundle["backbone"] == "mobilenet_v2" and tuple(report.bundle["input_size"]) == (224, 224):
            for line in check_goals(report):
                console.print("  " + line)
        else:
            console.print("  (the goals are set for MobileNetV2 224x224; no goal check here)")
        console.print(f"load average after: {os.getloadavg()}  -> {a.out / name}.json / .png\n")


if __name__ == "__main__":
    main()
