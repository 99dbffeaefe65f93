"""`edgecat stream` against the plain OpenCV loop (benchmarks/plain_stream.py), interleaved (not a test).

The plain loop runs the same runtime as ``--backend`` when that is LiteRT, ONNX Runtime or OpenVINO
(``--plain-runtime`` to choose), else LiteRT INT8, at ``--threads``.

Makes a 640x480 MPEG-4 clip with one validation photo per frame, then runs, round after round,
``python -m edgecat stream BUNDLE --source clip.mp4 --sink jsonl://... --json`` (default backend:
auto, unless ``--backend``) and the plain loop, alternating which goes first, each as its own
process, and reports the median FPS of each and their ratio; ``--pipelines auto,overlap`` runs edgecat once per
pipeline shape each round. ``--realtime`` runs both at the clip's
frame rate (edgecat with ``--realtime``) and compares p50 latency too. A first, untimed edgecat run
lets auto measure (and remember) its choice, as a user's first run would.

    .venv/bin/python benchmarks/stream_vs_plain.py BUNDLE --photos ../shared/data/cats-vs-dogs/validation \\
        --frames 1000 --rounds 3 [--threads 2] [--realtime] [--backend litert --precision int8]

BUNDLE is written to (auto remembers its choice in the manifest): pass a copy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def photo_clip(path: Path, folder: Path, frames: int, size: tuple[int, int] = (640, 480), fps: int = 30) -> Path:
    """One real photo per frame, resized to ``size``, MPEG-4 (mp4v)."""
    import cv2

    from edgecat.imaging import list_images

    files = list_images([folder])
    idx = np.linspace(0, len(files) - 1, min(frames, len(files))).astype(int)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in idx:
        out.write(cv2.resize(cv2.imread(str(files[i])), size, interpolation=cv2.INTER_AREA))
    out.release()
    return path


def last_json(text: str) -> dict[str, Any]:
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start
    try:
        return json.loads(text[start:])
    except ValueError:
        for line in reversed(text.splitlines()):  # the plain loop prints one line
            if line.startswith("{"):
                return json.loads(line)
        raise


def run(cmd: list[str], taskset: str | None) -> dict[str, Any]:
    if taskset:
        cmd = ["taskset", "-c", taskset, *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return last_json(p.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--video", type=Path, default=None, help="use this clip instead of making one")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="the plain loop's model threads")
    ap.add_argument("--plain-runtime", default=None, choices=("litert", "onnxruntime", "openvino"),
                    help="the plain loop's runtime (default: --backend when it is one of these, else litert)")
    ap.add_argument("--backend", default=None, help="edgecat's backend (default: auto)")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--edgecat-threads", type=int, default=None, help="edgecat --threads (default: its own)")
    ap.add_argument("--realtime", action="store_true")
    ap.add_argument("--pipelines", default="auto",
                    help="edgecat --pipeline values to run each round, comma-separated (e.g. auto,overlap)")
    ap.add_argument("--taskset", default=None, help="CPU list for both, e.g. 0 (one core)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        clip = a.video or photo_clip(Path(tmp) / "clip.mp4", a.photos, a.frames)
        events = Path(tmp) / "events.jsonl"
        ec = [py, "-m", "edgecat", "stream", str(a.bundle), "--source", str(clip), "--sink", f"jsonl://{events}",
              "--json"]
        if a.backend:
            ec += ["--backend", a.backend]
        if a.precision:
            ec += ["--precision", a.precision]
        if a.edgecat_threads:
            ec += ["--threads", str(a.edgecat_threads)]
        plain_runtime = a.plain_runtime or (a.backend if a.backend in ("litert", "onnxruntime", "openvino")
                                            else "litert")
        plain = [py, str(HERE / "plain_stream.py"), str(a.bundle), str(clip), str(Path(tmp) / "plain.jsonl"),
                 "--threads", str(a.threads), "--runtime", plain_runtime, "--precision", a.precision or "int8"]
        if a.realtime:
            ec.append("--realtime")
            plain.append("--realtime")
        cmds = {"plain": plain}
        for p in a.pipelines.split(","):
            cmds[f"edgecat-{p}"] = [*ec, "--pipeline", p]
        first = run(cmds[next(k for k in cmds if k != "plain")], a.taskset)  # auto measures here, untimed
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in cmds}
        load_before = os.getloadavg()
        for r in range(a.rounds):
            order = list(cmds) if r % 2 == 0 else list(reversed(cmds))
            for name in order:
                rows[name].append(run(cmds[name], a.taskset))
                time.sleep(0.5)
    med = {k: {"fps": round(statistics.median(r["fps"] for r in v), 2),
               "latency_p50_ms": round(statistics.median(r["latency_p50_ms"] for r in v), 3)} for k, v in rows.items()}
    report = {
        "cores": len(os.sched_getaffinity(0)) if a.taskset is None else a.taskset,
        "taskset": a.taskset, "realtime": a.realtime, "frames": first.get("frames"),
        "edgecat_model": f"{first.get('backend')}/{first.get('precision')} t{first.get('threads')}",
        "pipelines_ran": {k: sorted({r.get("pipeline") for r in v if r.get("pipeline")}) for k, v in rows.items()},
        "plain_model": f"{plain_runtime}/{a.precision or 'int8'} t{a.threads}",
        "plain_threads": a.threads, "load_before": load_before, "load_after": os.getloadavg(),
        "fps_each_round": {k: [r["fps"] for r in v] for k, v in rows.items()},
        "median": med,
        "fps_ratio_over_plain": {k: round(v["fps"] / med["plain"]["fps"], 3) for k, v in med.items() if k != "plain"},
        "latency_p50_ratio_over_plain": {k: round(v["latency_p50_ms"] / med["plain"]["latency_p50_ms"], 3)
                                         for k, v in med.items() if k != "plain"},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
