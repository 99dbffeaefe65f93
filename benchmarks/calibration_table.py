"""INT8 calibration methods x sizes, both flavours: calibration time, peak memory, accuracy, agreement.

For every method x image count, a fresh copy of the bundle (its ONNX FP32 model only, so no cached
ranges are reused) is quantized into both INT8 flavours in a subprocess run under ``/usr/bin/time -v``
(its "Maximum resident set size" is the calibration's peak RSS); then the precision table
(:func:`edgecat.export.precision_table.precision_table`, the TensorRT flavour as Q/DQ arithmetic)
scores FP32 and both INT8 models on the evaluation folder. Prints a markdown table, writes JSON.

    python benchmarks/calibration_table.py BUNDLE --calib ../shared/data/cats-vs-dogs/train \\
        --eval ../shared/data/cats-vs-dogs/validation --methods minmax,entropy,percentile \\
        --sizes 100,500 --out benchmarks/results/calibration_table.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("calibration_table")
KEEP = ("edgecat.json", "model.onnx", "splits.json")


def fresh_copy(bundle: Path, dest: Path) -> Path:
    """The bundle with only what INT8 export reads: no INT8 files, no calibration cache."""
    from edgecat.bundle import Bundle

    dest.mkdir(parents=True)
    for name in KEEP:
        if (bundle / name).exists():
            shutil.copy2(bundle / name, dest / name)
    b = Bundle.open(dest)
    for key in [k for k in b.artifacts if k != "onnx-fp32"]:
        b.remove_artifact(key, delete_file=False)
    return dest


def calibrate_worker(bundle: str, calib: str, size: int, method: str, flavours: str, out: str) -> None:
    """Subprocess body: quantize, write seconds and parity per flavour."""
    from edgecat.bundle import Bundle
    from edgecat.export.quantize import quantize_all

    t0 = time.perf_counter()
    results = quantize_all(Bundle.open(bundle), calib=calib, calib_size=size, method=method,
                           flavours=tuple(flavours.split(",")))
    Path(out).write_text(json.dumps({
        "wall_seconds": time.perf_counter() - t0,
        "flavours": {r.flavour: {"seconds": r.seconds, "images": r.images, "parity": r.parity} for r in results}}))


def peak_rss_bytes(time_v_stderr: str) -> int | None:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v_stderr)
    return int(m.group(1)) * 1024 if m else None


def run_one(args: argparse.Namespace, method: str, size: int, work: Path) -> dict[str, Any]:
    from edgecat.bundle import Bundle
    from edgecat.export.precision_table import precision_table

    copy = fresh_copy(Path(args.bundle), work / f"{method}-{size}")
    out = work / f"{method}-{size}.json"
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--worker", str(copy), "--calib", args.calib,
           "--size", str(size), "--method", method, "--flavours", args.flavours, "--result", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log.info("%s x %d: calibrating (%s)", method, size, args.flavours)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"method": method, "size": size, "error": " | ".join(tail),
                "peak_rss_bytes": peak_rss_bytes(proc.stderr)}
    calib = json.loads(out.read_text())
    table = precision_table(Bundle.open(copy), data=args.eval, limit=args.eval_limit, record=False)
    rows = {r.precision: r for r in table.rows}
    flavours = {}
    for flavour, res in calib["flavours"].items():
        row = rows["int8" if flavour == "cpu" else "int8-trt"]
        flavours[flavour] = {"calibration_seconds": round(res["seconds"], 1), "images": res["images"],
                             "accuracy": row.accuracy, "agreement": row.agreement,
                             "max_prob_diff": row.max_prob_diff}
    return {"method": method, "size": size, "peak_rss_bytes": peak_rss_bytes(proc.stderr),
            "wall_seconds": round(calib["wall_seconds"], 1), "fp32_accuracy": rows["fp32"].accuracy,
            "eval_images": table.images, "flavours": flavours}


def markdown(results: list[dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = ["| method | images | flavour | calibration s | peak RSS (both flavours) | FP32 acc | INT8 acc "
             "| agreement | max prob diff |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rss = f"{r['peak_rss_bytes'] / 2**30:.2f} GB" if r.get("peak_rss_bytes") else "-"
        if "error" in r:
            lines.append(f"| {r['method']} | {r['size']} | - | failed: {r['error'][:80]} | {rss} | | | | |")
            continue
        for flavour, f in r["flavours"].items():
            lines.append(f"| {r['method']} | {f['images']} | {flavour} | {f['calibration_seconds']} | {rss} | "
                         f"{pct(r['fp32_accuracy'])} | {pct(f['accuracy'])} | {pct(f['agreement'])} | "
                         f"{f['max_prob_diff']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--calib", required=True, help="folder of calibration images")
    ap.add_argument("--eval", help="labelled folder to score on (default: the bundle's validation split)")
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    ap.add_argument("--sizes", default="100,500")
    ap.add_argument("--flavours", default="cpu,trt")
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration_table.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.worker:
        calibrate_worker(args.bundle, args.calib, args.size, args.method, args.flavours, args.result)
        return
    if not Path("/usr/bin/time").exists():
        sys.exit("needs GNU time at /usr/bin/time (apt-get install time) for peak RSS")
    from edgecat.errors import EdgecatError

    try:
        run_all(args)
    except EdgecatError as exc:
        sys.exit(f"error: {exc}")


def run_all(args: argparse.Namespace) -> None:
    from edgecat.bundle import Bundle
    from edgecat.export.precision_table import labelled_set

    labelled_set(Bundle.open(args.bundle), args.eval, args.eval_limit)  # a bad --eval fails before calibrating
    results = []
    with tempfile.TemporaryDirectory(prefix="edgecat-calib-table-") as work:
        for method in args.methods.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                results.append(run_one(args, method, size, Path(work)))
                log.info("%s", json.dumps(results[-1]))
    import onnxruntime

    doc = {"bundle": str(Path(args.bundle).resolve()), "calib": args.calib, "eval": args.eval,
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version(), "onnxruntime": onnxruntime.__version__},
           "results": results, "markdown": markdown(results)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(doc["markdown"])
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
