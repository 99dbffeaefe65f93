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

from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.export.onnx import onnx_outputs, parity_images
from edgecat.fsutil import atomic_path

log = logging.getLogger(__name__)

#: relative logit error allowed (times the largest |logit| of the FP32 model on the checked images)
FP16_TOLERANCE = 2e-2
#: absolute logit error always allowed (rounding near a zero logit)
FP16_LOGIT_FLOOR = 5e-2
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


def logits(bundle: Bundle, raw: np.ndarray) -> np.ndarray:
    """Class log-probabilities centred per image (for a sigmoid output, +-logit/2): the quantity whose
    error FP16 scales with its size, unlike a saturating probability."""
    probs = np.clip(np.asarray(bundle.class_probs(raw), dtype=np.float64), 1e-12, 1.0)
    logp = np.log(probs)
    return logp - logp.mean(axis=1, keepdims=True)


def fp16_parity(bundle: Bundle, ref_raw: np.ndarray, got_raw: np.ndarray, what: str,
                tolerance: float = FP16_TOLERANCE) -> dict[str, Any]:
    """Compare FP16 outputs with FP32 ones; raise an EdgecatError when FP16 is not a correct
    conversion (non-finite outputs, or a logit error past the bound)."""
    ref32, got32 = np.asarray(ref_raw, np.float32), np.asarray(got_raw, np.float32)
    if not np.all(np.isfinite(got32)):
        raise EdgecatError(f"FP16 model gives non-finite outputs on {what} (an fp16 overflow, e.g. in the "
                           "preprocessing); no model.fp16.onnx written")
    z32, z16 = logits(bundle, ref32), logits(bundle, got32)
    logit_diff = float(np.max(np.abs(z32 - z16)))
    bound = FP16_LOGIT_FLOOR + tolerance * float(np.max(np.abs(z32)))
    agree = float(np.mean(np.array(bundle.labels_from_probs(bundle.class_probs(ref32)))
                          == np.array(bundle.labels_from_probs(bundle.class_probs(got32)))))
    parity = {"reference": "onnx-fp32", "images": what, "label_agreement": agree,
              "max_abs_diff": float(np.max(np.abs(bundle.class_probs(ref32) - bundle.class_probs(got32)))),
              "max_logit_diff": logit_diff, "logit_bound": bound, "tolerance": tolerance}
    log.info("ONNX FP16 vs FP32 on %s: labels %.1f%% equal, max logit diff %.3g (bound %.3g), max prob diff %.3g",
             what, 100 * agree, logit_diff, bound, parity["max_abs_diff"])
    if not logit_diff <= bound:
        raise EdgecatError(
            f"FP16 model does not match FP32: max logit difference {logit_diff:.3g} > {bound:.3g} "
            f"({FP16_LOGIT_FLOOR:g} + {tolerance:g} x largest |logit|) on {what}, labels {100 * agree:.1f}% equal; "
            "no model.fp16.onnx written"
        )
    return parity


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
        parity = fp16_parity(bundle, ref, got, what, tolerance)
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
        parity=parity,
    )
