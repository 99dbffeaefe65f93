"""The loop a user writes without edgecat: the reference `edgecat stream` must beat (not a test).

One thread: cv2.VideoCapture.read -> cv2.resize to the model size -> cvtColor BGR->RGB -> LiteRT
Interpreter(num_threads=N) on model.int8.tflite -> one JSON line per frame. Prints its FPS and the
p50 latency from frame read to JSON line. ``--realtime`` reads frames no faster than the clip's frame
rate, as from a camera.

    .venv/bin/python benchmarks/plain_stream.py BUNDLE clip.mp4 events.jsonl [--threads 2] [--realtime]
"""

import argparse
import json
import time

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main(bundle: str, video: str, out_path: str, threads: int = 2, realtime: bool = False) -> None:
    it = Interpreter(model_path=f"{bundle}/model.int8.tflite", num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]["index"]
    h, w = int(inp["shape"][1]), int(inp["shape"][2])
    cap = cv2.VideoCapture(video)
    period = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 30.0) if realtime else 0.0
    n, t0, lat = 0, time.perf_counter(), []
    with open(out_path, "w") as f:
        while True:
            if period:
                time.sleep(max(0.0, t0 + n * period - time.perf_counter()))
            ok, frame = cap.read()
            if not ok:
                break
            t_read = time.perf_counter()
            x = cv2.cvtColor(cv2.resize(frame, (w, h)), cv2.COLOR_BGR2RGB)
            it.set_tensor(inp["index"], x[None].astype(np.float32))
            it.invoke()
            p = it.get_tensor(out)[0]
            f.write(json.dumps({"frame": n, "label": int(np.argmax(p)) if p.size > 1 else int(p[0] > 0.5),
                                "prob": float(p.max())}) + "\n")
            lat.append((time.perf_counter() - t_read) * 1000.0)
            n += 1
    fps = n / (time.perf_counter() - t0)
    print(json.dumps({"frames": n, "fps": round(fps, 2), "latency_p50_ms": round(float(np.median(lat)), 3),
                      "threads": threads}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("video")
    ap.add_argument("events")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--realtime", action="store_true")
    a = ap.parse_args()
    main(a.bundle, a.video, a.events, a.threads, a.realtime)
