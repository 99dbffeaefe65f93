"""Classify images with a model served by Triton, the way edgecat does locally.

    pip install 'edgecat[triton]'
    python deploy/triton/client.py --url localhost:8000 --model cats-mnv2-onnx-fp32 cat.jpg dog.jpg

Images are decoded and resized with edgecat's own image path (RGB, bilinear, raw 0-255), so the
server sees exactly what `edgecat predict` feeds a local model. Labels come from the model's
labels.txt through Triton's classification extension; a binary model has one output, the
probability of its second class, compared with --threshold.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient

from edgecat import imaging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--url", default="localhost:8000", help="Triton HTTP endpoint (host:port)")
    parser.add_argument("--model", required=True, help="served model name, e.g. <bundle>-onnx-fp32")
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold of a binary model")
    args = parser.parse_args(argv)

    client = httpclient.InferenceServerClient(url=args.url)
    meta = client.get_model_metadata(args.model)
    inp_meta, out_meta = meta["inputs"][0], meta["outputs"][0]
    height, width = int(inp_meta["shape"][1]), int(inp_meta["shape"][2])  # [-1, H, W, 3]
    batch = imaging.to_batch([imaging.load_for_model(p, (height, width)) for p in args.images])

    inp = httpclient.InferInput(inp_meta["name"], list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch.astype(np.float32))
    probs = httpclient.InferRequestedOutput(out_meta["name"])
    top1 = httpclient.InferRequestedOutput(out_meta["name"], class_count=1)
    # Two requests: the classification extension replaces the tensor with "score:index:label" strings.
    raw = client.infer(args.model, [inp], outputs=[probs]).as_numpy(out_meta["name"])
    labels = client.infer(args.model, [inp], outputs=[top1]).as_numpy(out_meta["name"])
    for path, row, top in zip(args.images, raw, labels):
        _, _, label = top[0].decode().split(":", 2)
        if row.shape[-1] == 1:  # sigmoid: probability of the positive class
            p = float(row[0])
            verdict = label if p >= args.threshold else f"not {label}"
            print(f"{path}\t{verdict}\tp({label})={p:.4f}")
        else:
            print(f"{path}\t{label}\t{float(row.max()):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
