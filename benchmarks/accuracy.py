"""The README's accuracy table: train on real photos, export FP16/INT8, score every precision.

For each run: `edgecat train` (wall time measured around the command), then `edgecat export --fp16
--int8 --calib TRAIN --eval VALIDATION`; the figures are read back from each bundle's manifest, so
they are what `edgecat info` shows. Runs one after another (never in parallel: timing).

    .venv/bin/python benchmarks/accuracy.py --data ../shared/data/cats-vs-dogs \\
        --weights ../shared/weights/mobilenet_v2_1.0_224_no_top_imagenet_from_coral_tf2_ptq.h5 \\
        --out runs/accuracy [--runs default,160,no-augment]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: name -> extra `edgecat train` flags
RUNS: dict[str, list[str]] = {
    "default": [],
    "160": ["--img-size", "160"],
    "no-augment": ["--no-augment"],
    "no-cache": ["--feature-cache", "off"],
}


def edgecat(*args: str) -> float:
    """Run one edgecat command; seconds of wall time. Its output goes to our stderr."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgecat", *args], check=True, stdout=sys.stderr)
    return time.perf_counter() - t0


def summarize(bundle: Path, wall: float) -> dict[str, Any]:
    m = json.loads((bundle / "edgecat.json").read_text())
    training = m.get("training", {})
    stages = training.get("stages", {})
    rows = {r["precision"]: r for r in m.get("metrics", {}).get("precision_table", {}).get("rows", [])}
    return {
        "bundle": str(bundle), "size": m["input"]["shape"][0], "backbone": m["backbone"],
        "augment": m.get("config", {}).get("augment"), "wall_seconds": round(wall, 1),
        "stages": stages, "kept": m.get("history_summary", {}).get("kept", {}),
        "stage2_gain": m.get("history_summary", {}).get("stage2_gain"),
        "feature_cache": training.get("feature_cache"),
        "keras_accuracy": m.get("metrics", {}).get("validation", {}).get("accuracy"),
        "precisions": {k: {"accuracy": r["accuracy"], "agreement": r["agreement"],
                           "max_prob_diff": r["max_prob_diff"]} for k, r in rows.items()},
    }


def markdown(results: list[dict[str, Any]]) -> str:
    head = ("| run | size | augment | wall min | stage 1 s/epoch (best val) | stage 2 s/epoch (best val) | "
            "FP32 acc | FP16 acc / agree | INT8 CPU acc / agree | INT8 TRT acc / agree |")
    lines = [head, "|---" * 10 + "|"]

    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    for r in results:
        st = r["stages"]
        s1, s2 = st.get("stage1", {}), st.get("stage2", {})
        p = r["precisions"]

        def pa(k: str) -> str:
            return f"{pct(p[k]['accuracy'])} / {pct(p[k]['agreement'])}" if k in p else "-"

        lines.append(
            f"| {r['name']} | {r['size']} | {r['augment']} | {r['wall_seconds'] / 60:.1f} | "
            f"{s1.get('seconds_per_epoch', '-')} ({pct(s1.get('best_val_accuracy'))}) | "
            f"{s2.get('seconds_per_epoch', '-')} ({pct(s2.get('best_val_accuracy'))}) | "
            f"{pct(p.get('fp32', {}).get('accuracy'))} | {pa('fp16')} | {pa('int8')} | {pa('int8-trt')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder with train/ and validation/")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--out", default="runs/accuracy")
    ap.add_argument("--runs", default="default,160,no-augment", help=f"comma list of {', '.join(RUNS)}")
    ap.add_argument("--no-export", action="store_true", help="training figures only")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    results = []
    for name in args.runs.split(","):
        bundle = out / name
        wall = edgecat("train", "--data", str(data), "--weights", args.weights, "--out", str(bundle), *RUNS[name])
        if not args.no_export:
            edgecat("export", str(bundle), "--fp16", "--int8", "--calib", str(data / "train"),
                    "--eval", str(data / "validation"))
        results.append({"name": name, **summarize(bundle, wall)})
    machine = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "python": platform.python_version()}
    (out / "accuracy.json").write_text(json.dumps({"machine": machine, "runs": results}, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
