"""The order of an export: (Keras HDF5) -> ONNX FP32 -> FP16 -> INT8 + precision table -> TensorRT -> Triton / DeepStream.

Kept out of the CLI so notebooks and scripts run the same sequence `edgecat export` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from edgecat.errors import EdgecatError

log = logging.getLogger(__name__)


@dataclass
class ExportPlan:
    """What one `edgecat export` call asked for."""

    onnx: bool = False
    fp16: bool = False
    fp16_tolerance: float = 2e-2  # edgecat.export.fp16.FP16_TOLERANCE (relative logit error)
    int8: bool = False
    calib: str | None = None
    calib_size: int = 500
    calib_method: str = "minmax"
    eval_dir: str | None = None
    trt: bool = False
    precisions: list[str] | None = None
    batch: str = "1,8,32"
    workspace_gb: float = 2.0
    triton_dir: str | None = None
    deepstream_dir: str | None = None
    max_batch: int = 32
    opset: int = 17
    #: model.h5 (legacy Keras HDF5) for Keras users without edgecat
    h5: bool = False
    tflite: bool = False  # issue 12: LiteRT files from model.keras
    tflite_precisions: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass
class ExportResult:
    """One line per artifact written or skipped, warnings, and the precision table if one was made."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    table: Any = None


def run_export(bundle: Any, plan: ExportPlan) -> ExportResult:
    """Sequence the library exporters in dependency order (each is an importable function):
    ONNX FP32 -> FP16 -> INT8 + precision table -> TensorRT -> Triton / DeepStream.

    Checks that can fail fast (TensorRT + GPU, bad options) run before any slow step.
    """
    out = ExportResult()
    engines = None
    batch = None
    if plan.trt:
        from edgecat.export import tensorrt

        batch = tensorrt.parse_batch(plan.batch)
        engines = plan.precisions or (["fp32", "fp16"] + (["int8"] if plan.int8 or bundle.has("onnx-int8-trt") else []))
        for p in engines:
            tensorrt.engine_key(p)
        tensorrt.current_target(tensorrt.require_tensorrt())
    elif plan.precisions:
        raise EdgecatError("--precision applies to TensorRT engines: add --trt")
    if plan.calib is not None and not (plan.int8 or plan.tflite):
        raise EdgecatError("--calib is for INT8: add --int8")

    nothing_else = not (plan.fp16 or plan.int8 or plan.trt or plan.triton_dir or plan.deepstream_dir
                        or plan.eval_dir or plan.tflite)
    if plan.h5:
        from edgecat.export.h5 import export_h5

        entry = export_h5(bundle, parity_dirs=[plan.calib] if plan.calib else None)
        out.lines.append(f"keras-h5   {entry['file']}  reloaded vs Keras {entry['parity']['max_abs_diff']:.2e}")
    if plan.onnx or not (bundle.has("onnx-fp32") or (plan.h5 and nothing_else)):
        if not bundle.has("keras"):
            what = "model.onnx nor model.keras" if not bundle.has("onnx-fp32") else "model.keras"
            raise EdgecatError(f"bundle {bundle.path} has no {what} to export ONNX from "
                               "(ONNX FP32 is made where the Keras model and TensorFlow are)")
        from edgecat.export.onnx import export_onnx

        entry = export_onnx(bundle, opset=plan.opset, parity_dirs=[plan.calib] if plan.calib else None)
        out.lines.append(f"onnx-fp32  {entry['file']}  parity vs Keras {entry['parity']['max_abs_diff']:.2e}")
    elif nothing_else and not plan.h5:
        out.lines.append(f"{bundle.artifacts['onnx-fp32']['file']} is already there (use --onnx to re-export)")
    if plan.fp16:
        from edgecat.export.fp16 import export_fp16

        entry = export_fp16(bundle, tolerance=plan.fp16_tolerance)
        par = entry["parity"]
        out.lines.append(f"onnx-fp16  {entry['file']}  vs FP32: labels {100 * par['label_agreement']:.1f}% equal, "
                         f"max logit diff {par['max_logit_diff']:.2e} (bound {par['logit_bound']:.2e})")
    if plan.int8:
        from edgecat.export.quantize import quantize_all

        for r in quantize_all(bundle, calib=plan.calib, calib_size=plan.calib_size, method=plan.calib_method):
            out.lines.append(f"{r.artifact:<14} {r.file}  {r.images} calibration images ({r.method}, "
                             f"{'cached ranges' if r.cache_used else 'calibrated'})")
    if plan.tflite:
        out.lines += _tflite(bundle, plan)
    if plan.fp16 or plan.int8 or plan.eval_dir or plan.tflite:
        from edgecat.export.precision_table import precision_table

        out.table = precision_table(bundle, data=plan.eval_dir)
    if engines is not None and batch is not None:
        from edgecat.export import tensorrt

        for e in tensorrt.build_engines(bundle, engines, batch=batch, workspace_gb=plan.workspace_gb):
            out.lines.append(f"trt-{e.precision:<10} {e.file}  built in {e.seconds:.1f} s from {e.source}")
    if plan.triton_dir:
        from edgecat.export.triton import write_repository

        path = write_repository(bundle, plan.triton_dir, max_batch=plan.max_batch)
        out.lines.append(f"Triton model repository: {path}")
    if plan.deepstream_dir:
        from edgecat.export.deepstream import write_config

        path = write_config(bundle, plan.deepstream_dir)
        out.lines.append(f"DeepStream config: {path}")
    out.warnings += stale_derived(bundle)
    return out


def _tflite(bundle: Any, plan: ExportPlan) -> list[str]:
    """LiteRT files from model.keras, calibrated on the same set as the ONNX INT8 (issue 12)."""
    from edgecat.export.litert import export_litert

    lines = []
    for e in export_litert(bundle, tuple(plan.tflite_precisions), calib=plan.calib, calib_size=plan.calib_size,
                           fp16_tolerance=plan.fp16_tolerance):
        par = e["parity"]
        lines.append(f"tflite-{e['precision']:<7} {e['file']}  vs Keras: max diff {par['max_abs_diff']:.2e}, "
                     f"labels {100 * par['label_agreement']:.1f}% on {par['images']}")
    return lines


def stale_derived(bundle: Any) -> list[str]:
    """Warnings for FP16/INT8 models made from an older model.onnx than the bundle has now."""
    fp32 = bundle.artifacts.get("onnx-fp32", {}).get("sha256")
    flags = {"onnx-fp16": "--fp16", "onnx-int8": "--int8", "onnx-int8-trt": "--int8"}
    lines = []
    for key, flag in flags.items():
        made_from = bundle.artifacts.get(key, {}).get("made_by", {}).get("from_sha256")
        if fp32 and made_from and made_from != fp32:
            lines.append(f"{key} was made from an older model.onnx: re-run with {flag}")
    return lines
