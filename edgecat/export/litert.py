"""model.keras -> LiteRT (TFLite) FP32, FP16 and full-integer INT8, for phones, Raspberry Pis and Corals.

Converted from a concrete function with a fixed input signature: raw 0-255 float32 NHWC with a
*dynamic* batch (``[None, H, W, 3]``; the runtime resizes the input tensor when the batch changes),
so the deployed file takes exactly what every other edgecat runtime takes, preprocessing inside.

- ``tflite-fp32`` (model.fp32.tflite): float32 throughout.
- ``tflite-fp16`` (model.fp16.tflite): float16 weights (half the size); XNNPACK computes in fp32.
- ``tflite-int8`` (model.int8.tflite): full-integer int8 internals calibrated on the SAME images as
  the ONNX INT8 (:func:`edgecat.export.quantize.calibration_set`), float32 input and output kept,
  so every runtime keeps one input contract (raw 0-255 float32 or uint8). Measured with XNNPACK on
  the trained MobileNetV2 (benchmarks/README.md): float32 input 0.86 ms, uint8 input 0.96 ms at 2
  threads. uint8-input files are read too (the runtime quantizes with the file's scale).

Every file is written atomically, checked against Keras on real images with one
:func:`edgecat.validate.validate` comparison (FP32 within ONNX FP32's bound, FP16 by ONNX FP16's
logit rule, INT8 in probabilities: :func:`_rules`) and recorded with its sha256 and provenance.
Needs TensorFlow (export side only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.artifacts import PRECISIONS
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, MissingDependencyError, first_line
from edgecat.fsutil import atomic_path
from edgecat.log import quiet_native_stderr
from edgecat.validate import FilesRefused, ParityError, validate

log = logging.getLogger(__name__)

#: the registry's LiteRT artifacts by precision
KINDS = {p: artifacts.find("tflite", p) for p in PRECISIONS}


@dataclass(frozen=True)
class Rule:
    """How one precision's file is compared with Keras (the arguments of :func:`edgecat.validate.validate`)."""

    space: str
    tolerance: float
    floor: float = 0.0
    min_agreement: float | None = None


def _rules() -> dict[str, Rule]:
    """How each file is compared with Keras, in the space that suits its precision:

    - FP32: its raw outputs (probabilities) within ONNX FP32's bound of Keras.
    - FP16: in logit space with ONNX FP16's rule (``floor + tolerance * max|logit|``): FP16's error
      grows with a logit's size, so on a well-trained model a near-threshold probability moves by
      more than a fixed probability bound allows (0.033, every label kept, on the trained 224 px
      MobileNetV2).
    - INT8: in probability space. Its output is itself quantized (steps of 1/256 of a probability),
      so a confident image comes out as exactly 0 or 1 and its logit is unbounded (the trained
      224 px MobileNetV2: probabilities within 0.13 and every label kept, logits "off" by 9.9). The
      bound only catches a broken file (wrong scales): one image near the threshold can move by
      0.26. Whether INT8 keeps the labels is judged on the validation set by the precision table
      and ``--backend auto``, not on 16 parity images.
    """
    from edgecat.export.fp16 import FP16_LOGIT_FLOOR, FP16_TOLERANCE
    from edgecat.export.onnx import FP32_TOLERANCE

    return {"fp32": Rule("raw", FP32_TOLERANCE),
            "fp16": Rule("logits", FP16_TOLERANCE, FP16_LOGIT_FLOOR),
            "int8": Rule("probs", INT8_TOLERANCE, min_agreement=MIN_INT8_PARITY_LABELS)}


#: INT8's largest probability difference vs Keras, and the smallest share of labels kept
INT8_TOLERANCE = 0.5
MIN_INT8_PARITY_LABELS = 0.75
CALIB_BATCH = 1


def _converter(model: Any, size: tuple[int, int]) -> Any:
    """A converter from a concrete function: raw 0-255 float32 NHWC, dynamic batch."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, size[0], size[1], 3], tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    # Keras 3 variables would stay as READ_VARIABLE ops (no values in the file): freeze them first
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    conv.experimental_new_converter = True
    return conv


def convert(model: Any, size: tuple[int, int], precision: str, calib: np.ndarray | None = None,
            int8_input: str = "float32", bias_correction: bool = False,
            keep_float: list[str] | None = None, info: dict[str, Any] | None = None) -> bytes:
    """One LiteRT flatbuffer at ``precision``; INT8 needs ``calib`` (uint8 NHWC images).
    ``int8_input="uint8"`` makes a full-integer file with a uint8 input (benchmarks compare both).
    INT8 with ``bias_correction`` or ``keep_float`` is made in two halves (calibrate, then quantize:
    :mod:`edgecat.export.litert_bias`); what was done goes into ``info`` (recorded in the manifest)."""
    import tensorflow as tf

    if precision == "int8" and (bias_correction or keep_float) and int8_input == "float32":
        try:
            return _convert_corrected(model, size, calib, bias_correction, keep_float or [], info)
        except EdgecatError:
            raise
        except Exception as exc:  # noqa: BLE001 - private TensorFlow entry points (litert_bias)
            log.warning("LiteRT INT8: bias correction unavailable here (%s); one-shot conversion, "
                        "uncorrected", first_line(exc)[:160])
            if info is not None:
                info["bias_correction"] = None
    conv = _converter(model, size)
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        _full_integer(conv, calib, tf.uint8 if int8_input == "uint8" else tf.float32)
    try:
        with quiet_native_stderr():
            return bytes(conv.convert())
    except Exception as exc:
        raise EdgecatError(f"LiteRT {precision} conversion failed: {first_line(exc)[:200]}") from exc


def _full_integer(conv: Any, calib: np.ndarray | None, input_type: Any) -> None:
    """INT8 settings shared by the one-shot and the bias-corrected conversion: calibrated on
    ``calib``, full integer inside (refuse rather than silently keep float ops), float output."""
    import tensorflow as tf

    if calib is None or not len(calib):
        raise EdgecatError("LiteRT INT8 needs calibration images")

    def representative() -> Any:
        for img in calib:
            yield [img[None].astype(np.float32)]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = input_type
    conv.inference_output_type = tf.float32


def _convert_corrected(model: Any, size: tuple[int, int], calib: np.ndarray | None, correct: bool,
                       keep_float: list[str], info: dict[str, Any] | None) -> bytes:
    """Calibrate once, quantize the calibrated float model (``keep_float`` ops left in float), then
    correct the int32 biases with E[x] from BIAS_CORRECTION_IMAGES calibration images."""
    import tensorflow as tf

    from edgecat.export import litert_bias
    from edgecat.export.bias_correction import BIAS_CORRECTION_IMAGES

    conv = _converter(model, size)
    _full_integer(conv, calib, tf.float32)
    with quiet_native_stderr():
        calibrated = litert_bias.calibrate_only(conv)
        if keep_float == [litert_bias.LAST_STAGE]:
            keep_float = litert_bias.last_stage_ops(calibrated)
        names = {t for o in litert_bias.op_table(calibrated) for t in o["outputs"]}
        missing = [n for n in keep_float if n not in names]
        if missing:
            raise EdgecatError(f"no LiteRT op with output tensor {', '.join(missing[:3])} to keep in float")
        data = litert_bias.quantize_calibrated(calibrated, keep_float)
        done = None
        if correct:
            means = litert_bias.input_means(calibrated, calib[:BIAS_CORRECTION_IMAGES])
            data, done = litert_bias.bias_correct(data, calibrated, means)
            done["images"] = min(len(calib), BIAS_CORRECTION_IMAGES)
    if info is not None:
        info["bias_correction"] = done
        info["float_ops"] = litert_bias.float_ops(data)
    return data


def tflite_outputs(path: str | Path, batch: np.ndarray, threads: int = 1) -> np.ndarray:
    """Run a .tflite file on ``batch`` with the edge runtime (ai-edge-litert), one image at a time
    as a phone would; used for parity so the check runs the same interpreter as deployment."""
    from edgecat.runtime.litert.loader import make_interpreter

    with quiet_native_stderr():  # XNNPACK announces itself once the tensors are allocated
        interp = make_interpreter(path, threads=threads)
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.resize_tensor_input(inp["index"], [1, *batch.shape[1:]])
        interp.allocate_tensors()
    rows = []
    for img in batch:
        interp.set_tensor(inp["index"], img[None].astype(np.float32))
        interp.invoke()
        rows.append(np.array(interp.get_tensor(out["index"]), copy=True))
    return np.concatenate(rows).astype(np.float32)


def parity(bundle: Bundle, ref: np.ndarray, got: np.ndarray, what: str, precision: str,
           tolerance: float | None = None) -> dict[str, Any]:
    """``got`` (the .tflite file's raw outputs) against Keras' ``ref`` by the precision's :data:`RULES`
    entry (``tolerance`` replaces its tolerance); a ParityError past the bound, or (INT8) when too few
    labels are kept."""
    rule = _rules()[precision]
    tol = rule.tolerance if tolerance is None else tolerance
    report = validate(ref, got, what, tol, bundle=bundle, reference_name=str(KINDS[precision].made_from),
                      space=rule.space, floor=rule.floor, min_agreement=rule.min_agreement)
    logit = ""
    if "max_logit_diff" in report.extra:
        logit = (f", max logit diff {report.extra['max_logit_diff']:.2e} "
                 f"(bound {report.extra['logit_bound']:.2e})")
    log.info("LiteRT %s parity vs Keras on %s: max prob diff %.2e%s, labels %.1f%%", precision, what,
             report.max_abs_diff, logit, 100 * (report.label_agreement or 0.0))
    hint = " (--fp16-tolerance)" if precision == "fp16" else ""
    return report.raise_if_failed(f"LiteRT {precision} model", "Keras",
                                  f"no {KINDS[precision].file} written{hint}").parity()


def export_litert(bundle: Bundle, precisions: tuple[str, ...] = PRECISIONS, calib: str | Path | None = None,
                  calib_size: int = 500, parity_dirs: list[str] | None = None,
                  fp16_tolerance: float | None = None, bias_correction: bool = True,
                  keep_float: list[str] | None = None, calib_seed: int = 0) -> list[dict[str, Any]]:
    """Add ``model.{fp32,fp16,int8}.tflite`` (artifacts ``tflite-*``) made from the bundle's model.keras.
    INT8 is bias-corrected by default (README "Accuracy"); ``keep_float`` names ops (output tensors)
    left in float."""
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("LiteRT export needs TensorFlow: pip install 'edgecat[train]'") from exc
    from edgecat.splits import parity_images
    from edgecat.export.quantize import calibration_set, load_calibration_images
    from edgecat.runtime.keras.loader import load_keras_model

    for p in precisions:
        if p not in PRECISIONS:
            raise EdgecatError(f"unknown LiteRT precision '{p}' (choose from: {', '.join(PRECISIONS)})")
    tolerance: dict[str, float | None] = {"fp16": fp16_tolerance}
    model = load_keras_model(bundle.artifact_path("keras"))
    size = bundle.input_size
    batch, what = parity_images(bundle, extra_dirs=parity_dirs)
    ref = np.asarray(model(batch, training=False))
    cset = calib_images = None
    if "int8" in precisions:
        cset = calibration_set(bundle, calib, size=calib_size, seed=calib_seed)
        calib_images = load_calibration_images(cset, size)
    entries, refused = [], []
    for p in precisions:  # a refused file does not cost the others: each is written or refused alone
        try:
            entries.append(_write_one(bundle, model, p, ref, batch, what, calib_images if p == "int8" else None,
                                      cset, bias_correction, keep_float, tolerance.get(p)))
        except ParityError as exc:
            refused.append(str(exc))
    if refused:
        raise FilesRefused(refused, entries)
    return entries


def _write_one(bundle: Bundle, model: Any, p: str, ref: np.ndarray, batch: np.ndarray, what: str,
               calib_images: np.ndarray | None, cset: Any, bias_correction: bool,
               keep_float: list[str] | None, tolerance: float | None) -> dict[str, Any]:
    """Convert, check against Keras and write one LiteRT file; its manifest entry."""
    keras_entry = bundle.artifacts.get("keras", {})
    size = bundle.input_size
    t0 = time.perf_counter()
    quant: dict[str, Any] = {}
    data = convert(model, size, p, calib_images, bias_correction=bias_correction, keep_float=keep_float, info=quant)
    seconds = time.perf_counter() - t0
    dest = bundle.path / KINDS[p].file
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
        par = parity(bundle, ref, tflite_outputs(tmp, batch), what, p, tolerance)
    made_by = {"tool": "tf.lite.TFLiteConverter.from_concrete_functions (frozen)", "from": "keras",
               "from_sha256": keras_entry.get("sha256"), "seconds": round(seconds, 2),
               "input_signature": f"float32[None,{size[0]},{size[1]},3] raw 0-255 RGB",
               "versions": tool_versions("tensorflow", "ai_edge_litert")}
    if p == "int8" and cset is not None:
        made_by.update(calibration={"source": cset.source, "images": len(cset.files) - len(cset.skipped),
                                    "seed": cset.seed, "fingerprint": cset.fingerprint()}, io_dtype="float32",
                       internals="int8 (TFLITE_BUILTINS_INT8)",
                       bias_correction=quant.get("bias_correction"), float_ops=quant.get("float_ops", []))
    return bundle.add_artifact(KINDS[p].key, dest, format=KINDS[p].format, precision=p, input="image",
                               io_dtype="float32", made_by=made_by, parity=par)
