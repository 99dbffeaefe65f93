"""Evaluate the bundle's FP32, FP16 and INT8 ONNX models on one labelled set, side by side.

Quantization is only worth shipping if it keeps the labels: the table gives accuracy, label
agreement with FP32, the largest probability difference and size on disk for every precision, all
through ONNX Runtime on CPU with the deployment image path (so no TensorFlow is needed). The
TensorRT INT8 flavour is run as Q/DQ arithmetic (what TensorRT computes), see
:func:`edgecat.export.onnx.cpu_session`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.bundle import Bundle, now_iso
from edgecat.errors import EdgecatError
from edgecat.export.quantize import ARTIFACT, SIMULATED_FLAVOURS

log = logging.getLogger(__name__)

#: rows of the table, in order: (row name, artifact key)
ROWS: tuple[tuple[str, str], ...] = (
    ("fp32", "onnx-fp32"),
    ("fp16", "onnx-fp16"),
    ("int8", "onnx-int8"),
    ("int8-trt", "onnx-int8-trt"),
    # LiteRT files (issue 12), run through the litert runtime (XNNPACK) as on the device
    ("tflite-fp32", "tflite-fp32"),
    ("tflite-fp16", "tflite-fp16"),
    ("tflite-int8", "tflite-int8"),
)
#: artifacts evaluated as Q/DQ arithmetic (graph fusion off): built for TensorRT, not this CPU
SIMULATED = frozenset(ARTIFACT[f] for f in SIMULATED_FLAVOURS)
EVAL_BATCH = 32
DEFAULT_LIMIT = 1000


@dataclass
class PrecisionRow:
    precision: str
    artifact: str
    file: str
    bytes: int
    accuracy: float | None
    agreement: float
    max_prob_diff: float


@dataclass
class PrecisionTable:
    data: str
    images: int
    labelled: bool
    rows: list[PrecisionRow] = field(default_factory=list)
    created: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_set(bundle: Bundle, data: str | Path | None = None,
                 limit: int = DEFAULT_LIMIT) -> tuple[list[str], list[int] | None, str]:
    """(files, labels or None, description): ``data`` (class folders; a split layout's validation
    part), else the bundle's validation split, else the parity images (unlabelled)."""
    if data is not None:
        from edgecat.data import discover

        ds = discover(data, evaluation=True)
        unknown = sorted(set(ds.classes) - set(bundle.classes))
        if unknown:
            raise EdgecatError(f"--eval {data} has classes the model does not know: {', '.join(unknown)} "
                               f"(model classes: {', '.join(bundle.classes)})")
        files = list(ds.val.files)
        labels = [bundle.classes.index(ds.classes[y]) for y in ds.val.labels]
        what = str(data)
    else:
        from edgecat.splits import validation_files

        pairs = validation_files(bundle)
        files = [f for f, _ in pairs]
        labels = [y for _, y in pairs]
        what = "bundle validation split"
        if not files:
            return [], None, "synthetic images (no labelled data: pass --eval DIR)"
    if not files:
        raise EdgecatError(f"no labelled images found in {what}")
    if len(files) > limit:
        idx = np.random.default_rng(0).choice(len(files), size=limit, replace=False)
        idx.sort()
        files = [files[i] for i in idx]
        labels = [labels[i] for i in idx]
    return files, labels, what


def _load(files: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    from edgecat import imaging

    images, keep = [], []
    for i, f in enumerate(files):
        try:
            images.append(imaging.load_for_model(f, size))
            keep.append(i)
        except EdgecatError as exc:
            log.warning("precision table: skipping %s", exc)
    if not images:
        raise EdgecatError("no readable images to evaluate on")
    return np.stack(images), keep


def _predict(path: Path, images: np.ndarray, simulate_qdq: bool = False) -> np.ndarray:
    from edgecat.export.onnx import cpu_session

    sess = cpu_session(path, simulate_qdq)
    name = sess.get_inputs()[0].name
    want = np.uint8 if sess.get_inputs()[0].type == "tensor(uint8)" else np.float32
    outs = [sess.run(None, {name: images[i:i + EVAL_BATCH].astype(want)})[0]
            for i in range(0, len(images), EVAL_BATCH)]
    return np.concatenate(outs, axis=0)


def _predict_litert(bundle: Bundle, key: str, images: np.ndarray) -> np.ndarray:
    from edgecat.runtime import open_runtime

    with open_runtime(bundle, "litert", key.split("-", 1)[1]) as rt:
        return np.concatenate([rt.infer(images[i:i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)])


def precision_table(bundle: Bundle, data: str | Path | None = None, limit: int = DEFAULT_LIMIT,
                    record: bool = True) -> PrecisionTable:
    """Evaluate every ONNX precision the bundle has on the same images; record the table in the
    manifest (``metrics.precision_table`` and each artifact's ``accuracy``) when ``record``."""
    if not bundle.has("onnx-fp32"):
        raise EdgecatError("the bundle has no ONNX model to evaluate: run `edgecat export BUNDLE` first")
    files, labels, what = labelled_set(bundle, data, limit)
    if files:
        images, keep = _load(files, bundle.input_size)
        y = np.array([labels[i] for i in keep]) if labels is not None else None
    else:
        from edgecat.export.onnx import parity_images

        images, what = parity_images(bundle, n=32)
        y = None
    ref_probs: np.ndarray | None = None
    ref_labels: np.ndarray | None = None
    table = PrecisionTable(data=what, images=len(images), labelled=y is not None)
    for name, key in ROWS:
        if not bundle.has(key):
            continue
        path = bundle.artifact_path(key)
        # the TensorRT flavour as TensorRT computes it, not through ORT's x86 int8 kernels
        if key.startswith("tflite-"):
            probs = _predict_litert(bundle, key, images)
        else:
            probs = bundle.class_probs(_predict(path, images, simulate_qdq=key in SIMULATED))
        pred = np.array([bundle.classes.index(c) for c in bundle.labels_from_probs(probs)])
        if ref_probs is None:
            ref_probs, ref_labels = probs, pred
        table.rows.append(PrecisionRow(
            precision=name, artifact=key, file=path.name, bytes=path.stat().st_size,
            accuracy=float(np.mean(pred == y)) if y is not None else None,
            agreement=float(np.mean(pred == ref_labels)),
            max_prob_diff=float(np.max(np.abs(probs - ref_probs))),
        ))
    if record:
        for row in table.rows:
            bundle.artifacts[row.artifact]["accuracy"] = {
                "data": what, "images": table.images, "accuracy": row.accuracy,
                "agreement_with_fp32": row.agreement, "max_prob_diff_vs_fp32": row.max_prob_diff}
        bundle.manifest.setdefault("metrics", {})["precision_table"] = table.to_dict()
        bundle.save()
    return table


def render(table: PrecisionTable) -> Any:
    """A rich Table for the terminal."""
    from rich.table import Table

    t = Table(title=f"precision table: {table.images} images from {table.data}")
    for col in ("precision", "file", "size MB", "accuracy", "agreement", "max prob diff"):
        t.add_column(col, justify="left" if col in ("precision", "file") else "right")
    for r in table.rows:
        t.add_row(r.precision, r.file, f"{r.bytes / 1e6:.2f}",
                  "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%",
                  f"{100 * r.agreement:.2f}%", f"{r.max_prob_diff:.4f}")
    if any(r.artifact in SIMULATED for r in table.rows):
        t.caption = "int8-trt: run as Q/DQ arithmetic, as TensorRT computes it (not ORT's x86 int8 kernels)"
    return t
