"""The steps of an export, in order: (Keras HDF5) -> ONNX FP32 -> FP16 -> INT8 + precision table -> TensorRT -> Triton / DeepStream.

Kept out of the CLI so notebooks and scripts run the same sequence `edgecat export` runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from edgecat import artifacts
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


FP32 = artifacts.onnx("fp32")


def _fail_fast(bundle: Any, plan: ExportPlan) -> tuple[list[str] | None, tuple[int, int, int] | None]:
    """Option and TensorRT/GPU checks before any slow step: (engine precisions, batch profile)."""
    engines = batch = None
    if plan.trt:
        from edgecat.export import tensorrt

        batch = tensorrt.parse_batch(plan.batch)
        has_int8 = plan.int8 or bundle.has(tensorrt.SOURCE["int8"])
        engines = plan.precisions or [p for p in artifacts.PRECISIONS if p != "int8" or has_int8]
        for p in engines:
            tensorrt.engine_key(p)
        tensorrt.current_target(tensorrt.require_tensorrt())
    elif plan.precisions and not plan.deepstream_dir:
        raise EdgecatError("--precision applies to TensorRT engines and DeepStream configs: add --trt or --deepstream DIR")
    if plan.deepstream_dir:
        from edgecat.export.deepstream import preflight

        preflight(bundle, plan.precisions, builds_engines=plan.trt)
    if plan.calib is not None and not (plan.int8 or plan.tflite):
        raise EdgecatError("--calib is for INT8: add --int8")
    return engines, batch


def _onnx_step(bundle: Any, plan: ExportPlan, out: ExportResult) -> None:
    """ONNX FP32 when asked, or when the bundle lacks it (unless only model.h5 was asked for)."""
    nothing_else = not (plan.fp16 or plan.int8 or plan.trt or plan.triton_dir or plan.deepstream_dir
                        or plan.eval_dir or plan.tflite)
    if plan.onnx or not (bundle.has(FP32.key) or (plan.h5 and nothing_else)):
        if not bundle.has(FP32.made_from):
            keras = artifacts.file_of(str(FP32.made_from))
            what = f"{FP32.file} nor {keras}" if not bundle.has(FP32.key) else keras
            raise EdgecatError(f"bundle {bundle.path} has no {what} to export ONNX from "
                               "(ONNX FP32 is made where the Keras model and TensorFlow are)")
        from edgecat.export.onnx import export_onnx

        entry = export_onnx(bundle, opset=plan.opset, parity_dirs=[plan.calib] if plan.calib else None)
        out.lines.append(f"{FP32.key}  {entry['file']}  parity vs Keras {entry['parity']['max_abs_diff']:.2e}")
    elif nothing_else and not plan.h5:
        out.lines.append(f"{bundle.artifacts[FP32.key]['file']} is already there (use --onnx to re-export)")


def _derived_steps(bundle: Any, plan: ExportPlan, out: ExportResult) -> None:
    """FP16, INT8 (both flavours from one calibration set) and the precision table that scores them."""
    if plan.fp16:
        from edgecat.export.fp16 import KIND, export_fp16

        entry = export_fp16(bundle, tolerance=plan.fp16_tolerance)
        par = entry["parity"]
        out.lines.append(f"{KIND.key}  {entry['file']}  vs FP32: labels {100 * par['label_agreement']:.1f}% equal, "
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


def _deployment_steps(bundle: Any, plan: ExportPlan, out: ExportResult, engines: list[str] | None,
                      batch: tuple[int, int, int] | None) -> None:
    """TensorRT engines, then the Triton repository and DeepStream config that may serve them."""
    if engines is not None and batch is not None:
        from edgecat.export import tensorrt

        for e in tensorrt.build_engines(bundle, engines, batch=batch, workspace_gb=plan.workspace_gb):
            out.lines.append(f"{e.key:<14} {e.file}  built in {e.seconds:.1f} s from {e.source}")
    if plan.triton_dir:
        from edgecat.export.triton import write_repository

        path = write_repository(bundle, plan.triton_dir, max_batch=plan.max_batch)
        out.lines.append(f"Triton model repository: {path}")
    if plan.deepstream_dir:
        from edgecat.export.deepstream import config_precision, write_config

        path = write_config(bundle, plan.deepstream_dir, precision=config_precision(plan.precisions))
        out.lines.append(f"DeepStream config: {path}")


def run_export(bundle: Any, plan: ExportPlan) -> ExportResult:
    """Sequence the library exporters in dependency order (each is an importable function):
    (Keras HDF5) -> ONNX FP32 -> FP16 -> INT8 + precision table -> TensorRT -> Triton / DeepStream.

    Checks that can fail fast (TensorRT + GPU, bad options) run before any slow step.
    """
    out = ExportResult()
    engines, batch = _fail_fast(bundle, plan)
    if plan.h5:
        from edgecat.export.h5 import H5_KEY, export_h5

        entry = export_h5(bundle, parity_dirs=[plan.calib] if plan.calib else None)
        out.lines.append(f"{H5_KEY:<10} {entry['file']}  reloaded vs Keras {entry['parity']['max_abs_diff']:.2e}")
    _onnx_step(bundle, plan, out)
    _derived_steps(bundle, plan, out)
    _deployment_steps(bundle, plan, out, engines, batch)
    out.warnings += stale_derived(bundle)
    return out


def _tflite(bundle: Any, plan: ExportPlan) -> list[str]:
    """LiteRT files from model.keras, calibrated on the same set as the ONNX INT8 (issue 12)."""
    from edgecat.export.litert import export_litert

    lines = []
    for e in export_litert(bundle, tuple(plan.tflite_precisions), calib=plan.calib, calib_size=plan.calib_size,
                           fp16_tolerance=plan.fp16_tolerance):
        par = e["parity"]
        lines.append(f"{artifacts.find('tflite', e['precision']).key:<14} {e['file']}  vs Keras: max diff {par['max_abs_diff']:.2e}, "
                     f"labels {100 * par['label_agreement']:.1f}% on {par['images']}")
    return lines


def stale_derived(bundle: Any) -> list[str]:
    """Warnings for models made from an older model.onnx than the bundle has now (the registry's
    ONNX artifacts made from FP32), each with the flags that re-make it."""
    fp32 = bundle.artifacts.get(FP32.key, {}).get("sha256")
    lines = []
    for kind in artifacts.ARTIFACTS.values():
        if kind.made_from != FP32.key or kind.format != "onnx":
            continue
        made_from = bundle.artifacts.get(kind.key, {}).get("made_by", {}).get("from_sha256")
        if fp32 and made_from and made_from != fp32:
            lines.append(f"{kind.key} was made from an older {FP32.file}: re-run with {kind.export_flags}")
    return lines
