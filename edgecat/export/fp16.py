"""FP32 ONNX -> FP16 ONNX (internals fp16, fp32 input and output kept), no TensorFlow needed.

Keeping fp32 I/O means every caller (runtimes, Triton, TensorRT) feeds the same raw 0-255 float32
batch whatever the precision. The converted graph is checked against the FP32 graph with ONNX
Runtime on the same images; a model that drifts past the bound is refused and nothing is written.

What is checked is the logit (centred class log-probability, +-logit/2 for a sigmoid), not the
probability: FP16 keeps ~3 significant digits at every layer, so a correct conversion moves the
logits by an amount that grows with their size (a trained MobileNetV2 at 224 px on 200 validation
photos: centred logits up to 6.1, largest change 0.079, labels 100% equal, yet a probability moved
by 0.024, which a 1e-2 probability bound refused). The bound is
``FP16_LOGIT_FLOOR + tolerance * max|logit|`` over the checked images; outputs must be finite. A broken
conversion (preprocessing that overflowed fp16, corrupted weights) moves logits by their own size.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, MissingDependencyError, first_line
from edgecat.export.onnx import onnx_outputs, parity_images
from edgecat.fsutil import atomic_path
from edgecat.validate import validate

log = logging.getLogger(__name__)

KIND = artifacts.onnx("fp16")

#: relative logit error allowed (times the largest |logit| of the FP32 model on the checked images)
FP16_TOLERANCE = 2e-2
#: absolute logit error always allowed (rounding near a zero logit)
FP16_LOGIT_FLOOR = 5e-2


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


def fp16_parity(bundle: Bundle, ref_raw: np.ndarray, got_raw: np.ndarray, what: str,
                tolerance: float = FP16_TOLERANCE) -> dict[str, Any]:
    """Compare FP16 outputs with FP32 ones in logit space (FP16's error scales with a logit's size);
    a ParityError when FP16 is not a correct conversion (non-finite outputs, or past the bound)."""
    report = validate(ref_raw, got_raw, what, tolerance, bundle=bundle, reference_name=KIND.made_from or "",
                      space="logits", floor=FP16_LOGIT_FLOOR, name=KIND.file)
    return report.raise_if_failed("FP16 model", "FP32", f"no {KIND.file} written").parity()


def export_fp16(bundle: Bundle, tolerance: float = FP16_TOLERANCE,
                parity_dirs: list[str] | None = None) -> dict[str, Any]:
    """Add ``model.fp16.onnx`` (artifact ``onnx-fp16``) made from the bundle's ``onnx-fp32``."""
    import onnx

    src_key = str(KIND.made_from)
    src = bundle.artifact_path(src_key)
    dest = bundle.path / KIND.file
    t0 = time.perf_counter()
    model16 = convert_fp16(onnx.load(str(src)))
    seconds = time.perf_counter() - t0
    batch, what = parity_images(bundle, extra_dirs=parity_dirs)
    ref = onnx_outputs(src, batch)
    with atomic_path(dest) as tmp:
        onnx.save(model16, str(tmp))
        try:
            got = onnx_outputs(tmp, batch)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for unsupported fp16 graphs
            raise EdgecatError(
                f"ONNX Runtime cannot run the FP16 model: {first_line(exc)[:200]}; "
                f"no {KIND.file} written"
            ) from exc
        parity = fp16_parity(bundle, ref, got, what, tolerance)
    src_entry = bundle.artifacts[src_key]
    return bundle.add_artifact(
        KIND.key,
        dest,
        format=KIND.format,
        precision=KIND.precision,
        opset=src_entry.get("opset"),
        input=src_entry.get("input", "image"),
        output=src_entry.get("output", "probabilities"),
        io_dtype="float32",
        made_by={"tool": "onnxconverter_common.float16.convert_float_to_float16", "keep_io_types": True,
                 "from": src_key, "from_sha256": src_entry["sha256"], "seconds": round(seconds, 2),
                 "versions": tool_versions("onnx", "onnxconverter_common", "onnxruntime")},
        parity=parity,
    )
