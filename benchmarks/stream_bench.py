"""Throughput and capture-to-result latency of `edgecat stream` on this machine (not a test).

Goal: MobileNetV2 INT8 at 224 px, a 640x480 video file source, JSONL sink only:
>= 150 FPS processed and capture-to-result latency p50 <= 15 ms on the 2-core CPU. The script also
times each stage alone (video decode, BGR->RGB + resize, model call) to show where the time goes.

    .venv/bin/python benchmarks/stream_bench.py BUNDLE [--precision int8] [--frames 900]
    .venv/bin/python benchmarks/stream_bench.py BUNDLE --slideshow ../shared/data/cats-vs-dogs/validation

``--slideshow DIR`` plays an image folder (class sub-folders) as frames and reports FPS, latency and
accuracy against the folder names. BUNDLE for the goal: benchmarks/make_bundles.py builds one.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def stage_times(video: Path, bundle_path: Path, backend: str, precision: str, threads: int | None,
                n: int = 300) -> dict[str, float]:
    """Median ms per frame of each stage run alone, single-threaded one after the other."""
    import cv2

    from edgecat.bundle import Bundle
    from edgecat.imaging import bgr_to_rgb, resize
    from edgecat.select import open_backend
    from edgecat.stream.readers import open_video_file

    bundle = Bundle.open(bundle_path)
    cap = open_video_file(cv2, str(video))  # the stream's own decode settings
    decode, prep, frames = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        ok, f = cap.read()
        if not ok:
            break
        t1 = time.perf_counter()
        x = bgr_to_rgb(resize(f, bundle.input_size))  # the stream's order: resize, then the colour swap
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        prep.append(t2 - t1)
        frames.append(x)
    opts = {"threads": threads} if threads else {}
    infer = []
    rt, _ = open_backend(bundle, backend, precision, **opts)
    with rt:
        for x in frames[:10]:
            rt.infer(x[None])
        for x in frames[:200]:
            rt.infer(x[None])
            infer.append(rt.last_inference_ms / 1000)

    def ms(v: list[float]) -> float:
        return round(float(np.median(v)) * 1000, 3)

    return {"decode_ms": ms(decode), "resize_bgr2rgb_ms": ms(prep), "inference_ms": ms(infer),
            "serial_sum_ms": ms(decode) + ms(prep) + ms(infer)}


def photo_video(path: Path, folder: Path, frames: int, size: tuple[int, int] = (640, 480), fps: int = 30) -> Path:
    """A video of real photos (each held for 10 frames), resized to ``size``: what a camera would show."""
    import cv2

    from edgecat.imaging import list_images

    files = list_images([folder])
    idx = np.linspace(0, len(files) - 1, max(1, frames // 10)).astype(int)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    n = 0
    for i in idx:
        img = cv2.resize(cv2.imread(str(files[i])), size, interpolation=cv2.INTER_AREA)
        for _ in range(10):
            if n < frames:
                out.write(img)
                n += 1
    out.release()
    return path


def slideshow_accuracy(events: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    labelled = [r for r in rows if "file" in r]
    correct = sum(Path(r["file"]).parent.name == r["label"] for r in labelled)
    return {"images": len(labelled), "accuracy": round(correct / max(1, len(labelled)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--frames", type=int, default=900, help="length of the generated 640x480 video")
    ap.add_argument("--video", type=Path, default=None, help="use this video instead of generating one")
    ap.add_argument("--slideshow", type=Path, default=None, help="image folder with class sub-folders")
    ap.add_argument("--photos", type=Path, default=None, help="make the 640x480 video from these real photos")
    ap.add_argument("--batch", type=int, default=1, help="stream --batch (file frames per model call)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from edgecat.stream import StreamConfig, run_stream
    from edgecat.synthetic import make_video

    opts = {"threads": a.threads} if a.threads else {}
    report: dict = {"bundle": str(a.bundle), "backend": a.backend, "precision": a.precision}
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        if a.slideshow:
            source = str(a.slideshow)
        else:
            if a.video:
                video = a.video
            elif a.photos:
                video = photo_video(Path(tmp) / "bench.mp4", a.photos, a.frames)
            else:
                video = make_video(Path(tmp) / "bench.mp4", [i // 30 % 2 for i in range(a.frames)],
                                   size=(640, 480), fps=30)
            source = str(video)
            report["stages"] = stage_times(Path(video), a.bundle, a.backend, a.precision, a.threads)
        cfg = StreamConfig(sources=[source], sinks=[f"jsonl://{events}"], backend=a.backend,
                           precision=a.precision, runtime_options=opts, batch=a.batch)
        summary = run_stream(a.bundle, cfg)
        report["stream"] = {k: v for k, v in summary.as_dict().items() if k != "sources"}
        if a.slideshow:
            report["slideshow"] = slideshow_accuracy(events)
        else:
            model_ms = report["stages"]["inference_ms"]
            ratio = summary.fps * model_ms / 1000.0
            report["goal"] = {"fps>=150": summary.fps >= 150, "latency_p50<=15ms": summary.latency_p50_ms <= 15,
                              "fps_x_model_ms": round(ratio, 3), "fps>=0.95/model_ms": ratio >= 0.95}
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
