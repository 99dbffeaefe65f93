"""Evaluate the bundle's FP32, FP16 and INT8 ONNX models on one labelled set, side by side.

Quantization is only worth shipping if it keeps the labels: the table gives accuracy, label
agreement with FP32, the largest probability difference and size on disk for every precision, all
through ONNX Runtime on CPU with the deployment image path (so no TensorFlow is needed). The
TensorRT INT8 flavour is run as Q/DQ arithmetic (what TensorRT computes), see
:func:`edgecat.runtime.onnxruntime.loader.cpu_session`. The FP16 and INT8 ONNX files are scored once
more by each other CPU runtime auto may run them with (OpenVINO, where installed): its kernels round
their own way, and a device without photos judges it by these figures.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts, backends, imaging, int8_guard, splits
from edgecat.bundle import Bundle, now_iso
from edgecat.errors import EdgecatError
from edgecat.runtime.onnxruntime.loader import onnx_outputs
from edgecat.validate import validate

log = logging.getLogger(__name__)


def row_name(kind: artifacts.ArtifactKind) -> str:
    """ONNX: ``fp32`` ... ``int8`` (the default flavour), ``int8-trt`` (another flavour); other formats:
    their key (``tflite-int8``)."""
    if kind.format != "onnx":
        return kind.key
    default = kind.flavour is None or artifacts.onnx(kind.precision).key == kind.key
    return kind.precision if default else f"{kind.precision}-{kind.flavour}"


#: rows of the table, in order: (row name, artifact key): the registry's scored artifacts
ROWS: tuple[tuple[str, str], ...] = tuple((row_name(a), a.key) for a in artifacts.scored())
#: artifacts evaluated as Q/DQ arithmetic (graph fusion off): built for TensorRT, not this CPU
SIMULATED = frozenset(a.key for a in artifacts.scored() if a.simulated)
EVAL_BATCH = 32
#: changed photos named per row: enough to look at, bounded for a broken file that flips hundreds
FLIPS_LISTED = 20
DEFAULT_LIMIT = splits.DEFAULT_LIMIT


@dataclass
class PrecisionRow:
    precision: str
    artifact: str
    file: str
    bytes: int
    accuracy: float | None
    agreement: float
    max_prob_diff: float
    #: the runtime that ran the file when it is not the file's own reference (None: ONNX Runtime for
    #: ONNX files, LiteRT for .tflite): another runtime's INT8/FP16 kernels round their own way
    backend: str | None = None
    #: FP32 accuracy minus this file's (labelled data only), and FP32's confident answers it flips
    #: (:mod:`edgecat.int8_guard`); None on the FP32 row
    accuracy_drop: float | None = None
    confident_flips: int | None = None
    confident: int | None = None
    #: FP32's top-class probability on the surest photo this file changed (None: none changed)
    surest_flip: float | None = None
    #: the photos whose label changed (folder/name, FP32's surest answer first, at most FLIPS_LISTED)
    flipped: list[str] = field(default_factory=list)
    #: the export's targets (int8_guard.EXPORT_LIMITS) applied: {"ok", "rule", "reason", "limits"}
    check: dict[str, Any] | None = None


@dataclass
class PrecisionTable:
    data: str
    images: int
    labelled: bool
    rows: list[PrecisionRow] = field(default_factory=list)
    created: str = field(default_factory=now_iso)
    #: what the INT8 files were calibrated on (artifact key -> source): none of the scored images
    calibrated_on: dict[str, str] = field(default_factory=dict)
    #: images of ``data`` left out because an INT8 file was calibrated on them
    excluded_calibration_images: int = 0
    #: INT8 files whose calibration images are not known (an older edgecat): overlap not ruled out
    calibration_unknown: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scored_on(self) -> str:
        """One line: which images were scored and that INT8 was not calibrated on any of them."""
        line = f"{self.images} images from {self.data}"
        if self.calibrated_on and not self.calibration_unknown:
            line += "; none of them used for INT8 calibration"
        if self.excluded_calibration_images:
            line += f" ({self.excluded_calibration_images} calibration images left out)"
        if self.calibration_unknown:
            line += (f"; the calibration images of {', '.join(self.calibration_unknown)} are not recorded "
                     "(made by an older edgecat): re-export INT8 to rule out overlap")
        return line


def labelled_set(bundle: Bundle, data: str | Path | None = None,
                 limit: int = DEFAULT_LIMIT) -> tuple[list[str], list[int] | None, str]:
    """(files, labels or None, description) the table scores: :func:`edgecat.splits.labelled_set`."""
    return splits.labelled_set(bundle, data, limit)[:3]


def also_run_by(kind: artifacts.ArtifactKind) -> list[str]:
    """The other CPU runtimes installed here that ``--backend auto`` may run this reduced-precision
    file with (OpenVINO for the ONNX files): each scores it on its own kernels, so that auto on a
    device without photos judges each runtime by its own figures, not ONNX Runtime's."""
    if kind.precision == "fp32" or kind.simulated:
        return []
    return [b.name for b in backends.auto_candidates(gpu=False)
            if b.name in kind.backends[1:] and b.installed]


def _outputs(bundle: Bundle, key: str, images: np.ndarray, backend: str | None = None) -> np.ndarray:
    """Raw outputs of artifact ``key``: ONNX through a plain ORT CPU session (the TensorRT flavour as
    Q/DQ arithmetic, as TensorRT computes it, not through ORT's x86 int8 kernels); other formats, or
    ``backend`` when named, through that runtime (LiteRT files: XNNPACK, as on the device)."""
    kind = artifacts.kind(key)
    if kind.format == "onnx" and backend is None:
        return onnx_outputs(bundle.artifact_path(key), images, simulate_qdq=kind.simulated)
    from edgecat.runtime import open_runtime
    from edgecat.runtime.base import run_chunked

    with open_runtime(bundle, backend or kind.backends[0], kind.precision) as rt:
        return run_chunked(rt, images, EVAL_BATCH, raw=True)


def precision_table(bundle: Bundle, data: str | Path | None = None, limit: int = DEFAULT_LIMIT,
                    record: bool = True) -> PrecisionTable:
    """Evaluate every ONNX precision the bundle has on the same images; record the table in the
    manifest (``metrics.precision_table`` and each artifact's ``accuracy``) when ``record``.

    Images an INT8 file was calibrated on are never scored: when ``data`` (``--eval``) holds some of
    them (the same folder as ``--calib``), they are left out and the table says how many."""
    from edgecat.export.quantize import calibration_images

    if not bundle.has(artifacts.onnx("fp32").key):
        raise EdgecatError("the bundle has no ONNX model to evaluate: run `edgecat export BUNDLE` first")
    calibrated, sources, unknown = calibration_images(bundle)
    files, labels, what, dropped = splits.labelled_set(bundle, data, limit, exclude=calibrated)
    if files:
        loaded = imaging.load_batch(files, bundle.input_size)
        for why in loaded.errors.values():
            log.warning("precision table: skipping %s", why)
        if not loaded.files:
            raise EdgecatError("no readable images to evaluate on")
        images, names = loaded.images, [f"{Path(f).parent.name}/{Path(f).name}" for f in loaded.files]
        y = np.array([labels[i] for i in loaded.kept]) if labels is not None else None
    else:
        images, what = splits.parity_images(bundle, n=32, exclude=calibrated)
        y, names = None, []
    ref_raw: np.ndarray | None = None
    fidelities: dict[str, Any] = {}
    targets = int8_guard.limits_from_manifest(bundle.manifest, int8_guard.EXPORT_LIMITS, int8_guard.TARGETS_KEY)
    table = PrecisionTable(data=what, images=len(images), labelled=y is not None, calibrated_on=sources,
                           excluded_calibration_images=dropped, calibration_unknown=unknown)
    runs = [(name, key, backend) for name, key in ROWS if bundle.has(key)
            for backend in (None, *also_run_by(artifacts.kind(key)))]
    for name, key, backend in runs:
        path = bundle.artifact_path(key)
        raw = _outputs(bundle, key, images, backend)
        ref_raw = raw if ref_raw is None else ref_raw
        vs = validate(ref_raw, raw, what, bundle=bundle, reference_name=ROWS[0][1], name=path.name)
        pred = np.array([bundle.classes.index(c) for c in bundle.labels_from_probs(bundle.class_probs(raw))])
        row = PrecisionRow(
            precision=f"{name} ({backend})" if backend else name, artifact=key, file=path.name,
            bytes=path.stat().st_size, accuracy=float(np.mean(pred == y)) if y is not None else None,
            agreement=float(vs.label_agreement if vs.label_agreement is not None else 0.0),
            max_prob_diff=vs.max_abs_diff, backend=backend,
        )
        if raw is not ref_raw:
            p_ref, p = bundle.class_probs(ref_raw), bundle.class_probs(raw)
            fid = int8_guard.fidelity(p_ref, p, y, bundle.threshold, targets.margin)
            if names:
                row.flipped = [names[i] for i in int8_guard.flipped(p_ref, p, bundle.threshold)[:FLIPS_LISTED]]
            check = int8_guard.verdict(fid, targets).to_dict()
            del check["fidelity"]
            fidelities[key, backend] = fid.to_dict()
            row.accuracy_drop, row.confident_flips, row.confident = fid.accuracy_drop, fid.confident_flips, fid.confident
            row.surest_flip = fid.surest_flip
            row.check = check
        table.rows.append(row)
    if record:
        for row in table.rows:  # a file's own row comes first; other runtimes' figures go beside it
            scored = {"accuracy": row.accuracy, "agreement_with_fp32": row.agreement,
                      "max_prob_diff_vs_fp32": row.max_prob_diff,
                      **({"fidelity": fidelities[row.artifact, row.backend], "export_check": row.check}
                         if (row.artifact, row.backend) in fidelities else {})}
            if row.backend is None:
                bundle.artifacts[row.artifact]["accuracy"] = {"data": what, "images": table.images, **scored}
            else:
                bundle.artifacts[row.artifact]["accuracy"].setdefault(int8_guard.BY_BACKEND, {})[row.backend] = scored
        bundle.manifest.setdefault("metrics", {})["precision_table"] = table.to_dict()
        bundle.manifest.setdefault(int8_guard.MANIFEST_KEY, int8_guard.AUTO_LIMITS.to_dict())
        bundle.manifest.setdefault(int8_guard.TARGETS_KEY, targets.to_dict())
        bundle.save()
    return table


def render(table: PrecisionTable) -> Any:
    """A rich Table for the terminal."""
    from rich.table import Table

    t = Table(title=f"precision table: {table.scored_on()}")
    for col in ("precision", "file", "size MB", "accuracy", "agreement", "confident flips", "max prob diff"):
        t.add_column(col, justify="left" if col in ("precision", "file") else "right")
    for r in table.rows:
        t.add_row(r.precision, r.file, f"{r.bytes / 1e6:.2f}",
                  "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%",
                  f"{100 * r.agreement:.2f}%", "-" if r.confident_flips is None else f"{r.confident_flips}/{r.confident}",
                  f"{r.max_prob_diff:.4f}")
    if any(r.artifact in SIMULATED for r in table.rows):
        t.caption = "int8-trt: run as Q/DQ arithmetic, as TensorRT computes it (not ORT's x86 int8 kernels)"
    return t
