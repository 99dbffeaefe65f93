"""FP32 ONNX -> FP16 ONNX (internals fp16, fp32 input and output kept), no TensorFlow needed.

Keeping fp32 I/O means every caller (runtimes, Triton, TensorRT) feeds the same raw 0-255 float32
batch whatever the precision. The converted graph is checked against the FP32 graph with ONNX
Runtime on the same images; a model that drifts past the tolerance is refused and nothing is written.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np

from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.export.onnx import onnx_outputs, parity_images
from edgecat.fsutil import atomic_path

log = logging.getLogger(__name__)

FP16_TOLERANCE = 1e-2
FP16_FILE = "model.fp16.onnx"
#: ops that ONNX Runtime's CPU provider lacks fp16 kernels for, or where fp16 loses too much
#: (kept fp32 with casts around them).
DEFAULT_OP_BLOCK_LIST: tuple[str, ...] = ()


def convert_fp16(model: Any, op_block_list: list[str] | None = None) -> Any:
    """Return an fp16 copy of an ONNX ModelProto with fp32 inputs/outputs (onnxconverter-common)."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise MissingDependencyError(
            "FP16 export needs onnxconverter-common: pip install onnxconverter-common"
        ) from exc
    kwargs: dict[str, Any] = {"keep_io_types": True}
    if op_block_list:
        kwargs["op_block_list"] = list(float16.DEFAULT_OP_BLOCK_LIST) + list(op_block_list)
    with warnings.catch_warnings():
        # one warning per tiny weight truncated to fp16's smallest normal: noise, not news
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(model, **kwargs)


def export_fp16(bundle: Bundle, tolerance: float = FP16_TOLERANCE,
                parity_dirs: list[str] | None = None) -> dict[str, Any]:
    """Add ``model.fp16.onnx`` (artifact ``onnx-fp16``) made from the bundle's ``onnx-fp32``."""
    import onnx

    src = bundle.artifact_path("onnx-fp32")
    dest = bundle.path / FP16_FILE
    t0 = time.perf_counter()
    model16 = convert_fp16(onnx.load(str(src)), list(DEFAULT_OP_BLOCK_LIST))
    seconds = time.perf_counter() - t0
    batch, what = parity_images(bundle, extra_dirs=parity_dirs)
    ref = onnx_outputs(src, batch)
    with atomic_path(dest) as tmp:
        onnx.save(model16, str(tmp))
        try:
            got = onnx_outputs(tmp, batch)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for unsupported fp16 graphs
            raise EdgecatError(
                f"ONNX Runtime cannot run the FP16 model: {str(exc).splitlines()[0][:200]}; "
                "no model.fp16.onnx written"
            ) from exc
        diff = float(np.max(np.abs(ref.astype(np.float32) - got.astype(np.float32))))
        log.info("ONNX FP16 parity vs FP32 on %s: max abs diff %.2e (tolerance %.0e)", what, diff, tolerance)
        if not diff <= tolerance:
            raise EdgecatError(
                f"FP16 model does not match FP32: max abs difference {diff:.3g} > {tolerance:g} on {what}; "
                "no model.fp16.onnx written"
            )
    src_entry = bundle.artifacts["onnx-fp32"]
    return bundle.add_artifact(
        "onnx-fp16",
        dest,
        format="onnx",
        precision="fp16",
        opset=src_entry.get("opset"),
        input=src_entry.get("input", "image"),
        output=src_entry.get("output", "probabilities"),
        io_dtype="float32",
        made_by={"tool": "onnxconverter_common.float16.convert_float_to_float16", "keep_io_types": True,
                 "from": "onnx-fp32", "from_sha256": src_entry["sha256"], "seconds": round(seconds, 2),
                 "versions": tool_versions("onnx", "onnxconverter_common", "onnxruntime")},
        parity={"reference": "onnx-fp32", "images": what, "max_abs_diff": diff, "tolerance": tolerance},
    )
