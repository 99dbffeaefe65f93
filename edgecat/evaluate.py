"""Evaluate through the runtime interface, so every backend is judged the same way.

Images go through the shared edge image path (edgecat.imaging), i.e. exactly what deployment does;
metrics come from scikit-learn.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.bundle import Bundle, class_indices
from edgecat.errors import EdgecatError
from edgecat.fsutil import write_json
from edgecat.predict import run_files

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    files: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    plots: dict[str, str] = field(default_factory=dict)
    metrics_file: Path | None = None


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC-AUC and the confusion matrix."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=int)
    binary = len(classes) == 2
    y_pred = class_indices(probs, threshold)
    avg = "binary" if binary else "macro"
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, average=avg, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, average=avg, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, average=avg, zero_division=0)),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=list(range(len(classes)))).tolist(),
        "classes": list(classes),
        "threshold": threshold if binary else None,
        "positive_class": classes[1] if binary else None,
    }
    present = sorted(set(y_true.tolist()))
    if len(present) < 2:  # a cats-only test set: accuracy is meaningful, class-balance metrics are not
        for key in ("precision", "recall", "f1"):
            out[key] = None
        out["roc_auc"] = None
        only = classes[present[0]] if present else "none"
        out["note"] = (f"only one class ({only}) in the data: accuracy only; precision, recall, F1 and "
                       "ROC-AUC need images of both classes")
        return out
    try:
        if binary:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, probs[:, 1]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, probs, multi_class="ovr"))
    except ValueError:  # a class of the model absent from y_true (multi-class)
        out["roc_auc"] = None
    return out


def evaluate_bundle(
    bundle: Bundle | str, data: str | None = None, backend: str | None = None, precision: str | None = None,
    batch_size: int = 32, write: bool = True, plots: bool = True, **options: Any,
) -> EvalResult:
    """Evaluate on ``data`` (a labelled folder) or the bundle's own validation split.

    With ``write``, metrics go to the manifest and plots to ``plots/``: Keras on the bundle's own
    split is the training result (``metrics.json``, ``confusion_matrix.png``, key ``validation``);
    any other run gets its own files and key (``metrics-onnxruntime-int8.json``, key
    ``onnxruntime/int8``) so it never overwrites the training figures, and a run on another folder
    (``data``) gets names of its own too (``metrics-onnxruntime-int8-test-1a2b3c.json``, key
    ``onnxruntime/int8@test-1a2b3c``: :func:`data_slug`), so it never overwrites the figures on the
    bundle's validation split or on a third folder. ``backend``/``precision``
    None: :func:`edgecat.runtime.resolve_defaults` (:func:`edgecat.select.open_backend`); the figures name what actually ran (auto's pick).
    """
    from edgecat.select import open_backend
    from edgecat.splits import labelled_files, missing_hint

    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    files, labels, source = labelled_files(bundle, data or None, check=True)
    if not files and not data:
        raise EdgecatError(missing_hint(bundle, "validation", "--data"))
    y = np.asarray(labels)
    rt, _ = open_backend(bundle, backend, precision, **options)
    with rt:
        probs, ok, errors = run_files(rt, files, batch_size, progress=True)
        backend, precision = rt.backend, rt.precision
    for i, err in errors.items():
        log.warning("skipped %s: %s", files[i], err)
    files = [files[i] for i in ok]
    y = y[ok]
    if not len(files):
        raise EdgecatError(f"no readable images to evaluate in {source}")
    metrics = compute_metrics(y, probs, bundle.classes, bundle.threshold)
    # "precision" is the metric; the artifact precision gets its own key
    metrics.update({"data": source, "backend": backend, "model_precision": precision})
    result = EvalResult(metrics, files, y, probs)
    if write:
        own = backend in ("keras", "keras-predict") and not data  # the training result itself
        try:
            _record(bundle, result, files, own, plots, slug=data_slug(data) if data else "")
        except OSError as exc:  # a read-only bundle on a device: the figures are still printed
            result.plots.clear()
            result.metrics_file = None
            result.metrics.pop("plots", None)
            log.warning("metrics not saved in %s (%s)", bundle.path, exc.strerror or exc)
    return result


def evaluate_dataset(bundle: Bundle, model: Any, dataset: Any, source: str, plots: bool = True) -> EvalResult:
    """The training result for data that is not files on disk (TensorFlow Datasets): the Keras
    model over a batched ``(images 0-255, labels)`` tf.data set, recorded like :func:`evaluate_bundle`."""
    probs, ys, samples = [], [], []
    for x, y in dataset:
        x = np.asarray(x)
        probs.append(bundle.class_probs(model(x, training=False)))
        ys.append(np.asarray(y).astype(int).ravel())
        if len(samples) < 25:
            samples.extend(np.clip(x[: 25 - len(samples)], 0, 255).astype(np.uint8))
    if not ys:
        raise EdgecatError(f"no validation images in {source}")
    y, p = np.concatenate(ys), np.concatenate(probs)
    metrics = compute_metrics(y, p, bundle.classes, bundle.threshold)
    metrics.update({"data": source, "backend": "keras", "model_precision": "fp32"})
    result = EvalResult(metrics, [f"{source}[{i}]" for i in range(len(y))], y, p)
    n = len(samples)
    _record(bundle, result, samples, own=True, plots=plots, grid=(y[:n], p[:n]))
    return result


def data_slug(data: str | Path) -> str:
    """A short, stable name for an evaluation folder: its name (safe characters only) and 6 hex
    digits of its absolute path, so two folders called ``test`` get different files."""
    path = os.path.abspath(os.fspath(data))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).name).strip("._")[:32] or "data"
    return f"{name}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"


def _record(bundle: Bundle, result: EvalResult, images: list[Any], own: bool, plots: bool,
            grid: tuple[np.ndarray, np.ndarray] | None = None, slug: str = "") -> None:
    """Metrics file, plots and manifest entry; a run other than the training result gets its own
    names (``-backend-precision``, plus ``-<slug>`` on another folder) so it never overwrites the
    training figures or another folder's."""
    metrics = result.metrics
    backend, precision = metrics["backend"], metrics["model_precision"]
    suffix = "" if own else f"-{backend}-{precision}" + (f"-{slug}" if slug else "")
    if plots:
        from edgecat.plots import plot_confusion, plot_grid

        pdir = bundle.path / "plots"
        result.plots["confusion_matrix"] = str(plot_confusion(
            metrics["confusion_matrix"], bundle.classes, pdir / f"confusion_matrix{suffix}.png"))
        gy, gp = grid if grid is not None else (result.y_true, result.probs)
        result.plots["grid"] = str(plot_grid(images, gy, gp, bundle, pdir / f"val_grid{suffix}.png"))
        metrics["plots"] = {k: Path(v).relative_to(bundle.path).as_posix() for k, v in result.plots.items()}
    result.metrics_file = bundle.path / f"metrics{suffix}.json"
    write_json(result.metrics_file, metrics)
    key = "validation" if own else f"{backend}/{precision}" + (f"@{slug}" if slug else "")
    bundle.manifest.setdefault("metrics", {})[key] = {
        k: metrics[k] for k in ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "data")
    }
    bundle.save()
