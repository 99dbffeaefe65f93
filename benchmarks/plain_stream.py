"""The loop a user writes without edgecat: the reference `edgecat stream` must beat (not a test).

One thread: cv2.VideoCapture.read -> cv2.resize to the model size -> cvtColor BGR->RGB -> the model
-> one JSON line per frame. The model is what each library's own quick start does with the INT8 file:
LiteRT ``Interpreter(num_threads=N)`` on model.int8.tflite (default), ONNX Runtime
``InferenceSession`` with ``intra_op_num_threads=N`` on model.int8.onnx, or OpenVINO
``compile_model`` of model.int8.onnx reshaped to batch 1 with ``INFERENCE_NUM_THREADS=N`` (the
faster of OpenVINO's two plain setups). Prints its FPS and the p50 latency from frame read to JSON
line. ``--realtime`` reads frames no faster than the clip's frame rate, as from a camera.

    .venv/bin/python benchmarks/plain_stream.py BUNDLE clip.mp4 events.jsonl [--threads 2] [--realtime] \
        [--runtime litert|onnxruntime|openvino] [--precision int8|fp16|fp32]
"""

import argparse
import json
import time

import cv2
import numpy as np

ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def load_model(bundle: str, runtime: str, precision: str, threads: int):
    """(predict(batch) -> probabilities, (h, w)) as the library's quick start writes it."""
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=f"{bundle}/model.{precision}.tflite", num_threads=threads)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]["index"]

        def predict(x):
            it.set_tensor(inp["index"], x)
            it.invoke()
            return it.get_tensor(out)

        return predict, (int(inp["shape"][1]), int(inp["shape"][2]))
    path = f"{bundle}/{ONNX_FILES[precision]}"
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        return (lambda x: sess.run(None, {inp.name: x})[0]), (int(inp.shape[1]), int(inp.shape[2]))
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    shape = model.input(0).get_partial_shape()
    h, w = shape[1].get_length(), shape[2].get_length()
    model.reshape([1, h, w, shape[3].get_length()])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return (lambda x: request.infer({0: x})[0]), (h, w)


def main(bundle: str, video: str, out_path: str, threads: int = 2, realtime: bool = False,
         runtime: str = "litert", precision: str = "int8") -> None:
    predict, (h, w) = load_model(bundle, runtime, precision, threads)
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
            p = np.asarray(predict(x[None].astype(np.float32)))[0]
            f.write(json.dumps({"frame": n, "label": int(np.argmax(p)) if p.size > 1 else int(p[0] > 0.5),
                                "prob": float(p.max())}) + "\n")
            lat.append((time.perf_counter() - t_read) * 1000.0)
            n += 1
    fps = n / (time.perf_counter() - t0)
    print(json.dumps({"frames": n, "fps": round(fps, 2), "latency_p50_ms": round(float(np.median(lat)), 3),
                      "threads": threads, "runtime": runtime, "precision": precision}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("video")
    ap.add_argument("events")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--realtime", action="store_true")
    ap.add_argument("--runtime", choices=("litert", "onnxruntime", "openvino"), default="litert")
    ap.add_argument("--precision", choices=tuple(ONNX_FILES), default="int8")
    a = ap.parse_args()
    main(a.bundle, a.video, a.events, a.threads, a.realtime, a.runtime, a.precision)
