"""Build 224 px latency bundles (untrained weights=None, architecturally identical to trained ones)
with FP32 + INT8 (CPU flavour) ONNX, for the latency benchmark when no trained bundle is at hand.

    .venv/bin/python benchmarks/make_bundles.py OUT_DIR --calib ../shared/data/cats-vs-dogs/train
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--calib", required=True, help="image folder for INT8 calibration")
    ap.add_argument("--calib-size", type=int, default=100)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--backbones", default="mobilenet_v2,resnet50")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from conftest import _make_bundle  # the same builder the tests use

    from edgecat.bundle import Bundle
    from edgecat.export.quantize import quantize_int8

    for backbone in a.backbones.split(","):
        root = a.out / f"{backbone}-{a.size}"
        if not (root / "edgecat.json").exists():
            _make_bundle(root, backbone, a.size, None, onnx=True)
        bundle = Bundle.open(root)
        if not bundle.has("onnx-int8"):
            quantize_int8(bundle, "cpu", calib=a.calib, calib_size=a.calib_size)
        print(root, sorted(Bundle.open(root).artifacts))


if __name__ == "__main__":
    main()
