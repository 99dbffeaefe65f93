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
    fp16_tolerance: float = artifacts.EXPORT.fp16_tolerance
    int8: bool = False
    calib: str | None = None
    calib_size: int = artifacts.EXPORT.calib_size
    calib_method: str = artifacts.EXPORT.calib_method
    calib_seed: int = artifacts.EXPORT.calib_seed
    #: INT8 bias correction (ONNX and LiteRT): the default, off only to compare
    bias_correction: bool = True
    eval_dir: str | None = None
    trt: bool = False
    precisions: list[str] | None = None
    batch: str = artifacts.EXPORT.trt_batch
    workspace_gb: float = artifacts.EXPORT.workspace_gb
    triton_dir: str | None = None
    deepstream_dir: str | None = None
    max_batch: int = artifacts.EXPORT.max_batch
    opset: int = artifacts.EXPORT.opset
    #: model.h5 (legacy Keras HDF5) for Keras users without edgecat
    h5: bool = False
    tflite: bool = False  # LiteRT files from model.keras
    tflite_precisions: tuple[str, ...] = artifacts.EXPORT.tflite_precisions
    #: LiteRT INT8 ops left in float (output tensor names, or ["last-stage"]); None: full integer
    tflite_keep_float: list[str] | None = None

    def parity_dirs(self) -> list[str] | None:
        """Folders of real photos for the parity checks besides the bundle's validation split: the
        evaluation folder, then the calibration folder (INT8 leaves its calibration images out)."""
        return [d for d in (self.eval_dir, self.calib) if d] or None


@dataclass
class ExportResult:
    """One line per artifact written or skipped (each names its file), warnings, and the precision
    table if one was made. What is here is not also logged: the caller prints it once."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    table: Any = None
    #: what each parity check ran on (file -> images description): synthetic images are warned about
    parity_images: dict[str, str] = field(default_factory=dict)
    #: one line per file its parity check refused: the export carried on, and the caller exits non-zero
    refused: list[str] = field(default_factory=list)

    def checked(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Note what ``entry``'s parity check ran on; returns the entry."""
        images = (entry.get("parity") or {}).get("images")
        if images:
            self.parity_images[str(entry.get("file"))] = str(images)
        return entry


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

        entry = out.checked(export_onnx(bundle, opset=plan.opset, parity_dirs=plan.parity_dirs()))
        out.lines.append(f"{FP32.key:<14} {entry['file']}  vs Keras: max diff {entry['parity']['max_abs_diff']:.2e} "
                         f"on {entry['parity']['images']}")
    elif nothing_else and not plan.h5:
        out.lines.append(f"{bundle.artifacts[FP32.key]['file']} is already there (use --onnx to re-export)")


def _derived_steps(bundle: Any, plan: ExportPlan, out: ExportResult) -> None:
    """FP16, INT8 (both flavours from one calibration set) and the precision table that scores them."""
    if plan.fp16:
        from edgecat.export.fp16 import KIND, export_fp16

        entry = out.checked(export_fp16(bundle, tolerance=plan.fp16_tolerance, parity_dirs=plan.parity_dirs()))
        par = entry["parity"]
        out.lines.append(f"{KIND.key:<14} {entry['file']}  vs FP32: labels {100 * par['label_agreement']:.1f}% equal, "
                         f"max logit diff {par['max_logit_diff']:.2e} (bound {par['logit_bound']:.2e}) "
                         f"on {par['images']}")
    if plan.int8:
        from edgecat.export.quantize import quantize_all

        for r in quantize_all(bundle, calib=plan.calib, calib_size=plan.calib_size, method=plan.calib_method,
                              parity_dirs=plan.parity_dirs(), bias_correction=plan.bias_correction,
                              seed=plan.calib_seed):
            out.checked({"file": r.file, "parity": r.parity})
            out.lines.append(f"{r.artifact:<14} {r.file}  {r.images} calibration images ({r.method}, "
                             f"{'cached ranges' if r.cache_used else 'calibrated'}); vs FP32: labels "
                             f"{100 * r.parity.get('label_agreement', 0.0):.1f}% equal on {r.parity['images']}")
    if plan.tflite:
        out.lines += _tflite(bundle, plan, out)
    if plan.fp16 or plan.int8 or plan.eval_dir or plan.tflite:
        from edgecat.export.precision_table import precision_table

        out.table = precision_table(bundle, data=plan.eval_dir)
        out.warnings += int8_warnings(bundle, out.table)


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
    bundle.require_writable()  # a read-only bundle: one line now, not a PermissionError at the end
    out = ExportResult()
    engines, batch = _fail_fast(bundle, plan)
    if plan.h5:
        from edgecat.export.h5 import H5_KEY, export_h5

        entry = out.checked(export_h5(bundle, parity_dirs=plan.parity_dirs()))
        out.lines.append(f"{H5_KEY:<14} {entry['file']}  reloaded vs Keras: max diff "
                         f"{entry['parity']['max_abs_diff']:.2e} on {entry['parity']['images']}")
    _onnx_step(bundle, plan, out)
    _derived_steps(bundle, plan, out)
    _deployment_steps(bundle, plan, out, engines, batch)
    out.warnings += synthetic_warnings(bundle, out)
    out.warnings += stale_derived(bundle)
    return out


def _tflite(bundle: Any, plan: ExportPlan, out: ExportResult) -> list[str]:
    """LiteRT files from model.keras, calibrated on the same set as the ONNX INT8. A file its parity
    check refuses is reported in ``out.refused``; the others, the precision table and the later
    steps go on."""
    from edgecat.export.litert import export_litert
    from edgecat.validate import FilesRefused

    try:
        entries = export_litert(bundle, tuple(plan.tflite_precisions), calib=plan.calib,
                                calib_size=plan.calib_size, calib_seed=plan.calib_seed,
                                fp16_tolerance=plan.fp16_tolerance, parity_dirs=plan.parity_dirs(),
                                bias_correction=plan.bias_correction, keep_float=plan.tflite_keep_float)
    except FilesRefused as exc:
        entries = exc.entries
        out.refused += exc.errors
    lines = []
    for e in entries:
        par = out.checked(e)["parity"]
        lines.append(f"{artifacts.find('tflite', e['precision']).key:<14} {e['file']}  vs Keras: max diff {par['max_abs_diff']:.2e}, "
                     f"labels {100 * par['label_agreement']:.1f}% on {par['images']}")
    return lines


def int8_warnings(bundle: Any, table: Any) -> list[str]:
    """One line per INT8 file that misses the export's targets on the table's photos
    (:data:`edgecat.int8_guard.EXPORT_LIMITS`: accuracy within 0.2 points of FP32 on labelled photos,
    at most 0.2% of FP32's confident answers flipped), with the figure and what to do: such a file
    changes answers a user would notice, and ``--backend auto`` may refuse it. More photos of the same
    kind are not the cure: on a 160 px MobileNetV2 bundle 1,000 or all 2,000 training photos lost
    about as much as 500 (README, "INT8 that keeps the accuracy"); photos like the deployed ones may be."""
    fp16 = artifacts.onnx("fp16")
    keep = f"deploy FP16 ({fp16.file}, `--fp16`)" if not bundle.has(fp16.key) else f"deploy FP16 ({fp16.file})"
    lines = []
    for row in getattr(table, "rows", None) or []:
        check = row.check or {}
        if artifacts.kind(row.artifact).precision != "int8" or check.get("ok", True):
            continue
        run_by = f" run by {row.backend}" if row.backend else ""
        lines.append(f"{row.file}{run_by} misses the INT8 target on {table.images} evaluation photos ({check['reason']}): "
                     "calibrate on photos like the ones it will see (--calib DIR) or "
                     f"{_int8_remedy(bundle, row.artifact, keep)}")
    return lines


def _int8_remedy(bundle: Any, key: str, fp16: str) -> str:
    """A full-integer LiteRT file has its own cure (the last stage in float met the targets where the
    full-integer file did not, at 2.7x the file size and part of INT8's speed), which the other
    formats lack."""
    if artifacts.kind(key).format != "tflite":
        return fp16
    made_by = (bundle.artifacts.get(key) or {}).get("made_by") or {}
    if made_by.get("float_ops"):
        fp16_tflite = artifacts.find("tflite", "fp16")
        return f"deploy {fp16_tflite.file} (`{fp16_tflite.export_flags}`)"
    return ("keep its last stage in float (`--tflite --tflite-keep-float last-stage`: a larger, slower file, "
            "2.7x the size on MobileNetV2)")


def synthetic_warnings(bundle: Any, out: ExportResult) -> list[str]:
    """One line when a parity check or the precision table ran on random pixels, not photos: such a
    check catches a broken conversion, not a loss of accuracy, and the user should know."""
    from edgecat.splits import SYNTHETIC, missing_hint

    files = [f for f, what in out.parity_images.items() if SYNTHETIC in what]
    table = out.table is not None and SYNTHETIC in str(out.table.data)
    if not files and not table:
        return []
    checks = ", ".join(files) + (" and " if files and table else "") + ("the precision table" if table else "")
    what = "parity check of " if files else ""
    return [f"the {what}{checks} ran on synthetic images (random pixels, not photos): "
            f"{missing_hint(bundle, 'validation', '--eval')} (a folder of labelled photos)"]


def stale_derived(bundle: Any) -> list[str]:
    """Warnings for files made from an older version of their source than the bundle has now
    (FP16/INT8 made from a model.onnx that was re-exported since), each with the command that
    re-makes it (:meth:`edgecat.bundle.Bundle.stale`, which `edgecat info` shows too)."""
    return list(bundle.stale().values())
