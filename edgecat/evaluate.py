"""Predict and evaluate through the runtime interface, so every backend is judged the same way.

Images go through the shared edge image path (edgecat.imaging), i.e. exactly what deployment does;
metrics come from scikit-learn.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import imaging
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.fsutil import write_json

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    file: str
    label: str | None
    probability: float | None
    probs: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"file": self.file, "label": self.label, "probability": self.probability, "probs": self.probs}
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    files: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    plots: dict[str, str] = field(default_factory=dict)
    metrics_file: Path | None = None


def _load(path: str, size: tuple[int, int]) -> np.ndarray | str:
    try:
        return imaging.load_for_model(path, size)
    except EdgecatError as exc:
        return str(exc)


def run_files(runtime: Any, files: list[str], batch_size: int = 32,
              progress: bool = False) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Class probabilities for ``files``; returns (probs of the readable ones, their indices, errors)."""
    if batch_size < 1:
        raise EdgecatError(f"batch size must be at least 1 (got {batch_size})")
    size = runtime.input_size
    probs: list[np.ndarray] = []
    ok: list[int] = []
    errors: dict[int, str] = {}
    chunks = [list(range(i, min(i + batch_size, len(files)))) for i in range(0, len(files), batch_size)]
    prog = None
    if progress and len(files) > batch_size:
        from edgecat.log import progress as stderr_progress  # shares the log's console: no collisions

        prog = stderr_progress()
        task = prog.add_task("predicting", total=len(files))
        prog.start()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:  # decode the next batch while this one runs
            loaded = pool.map(lambda idx: [_load(files[i], size) for i in idx], chunks)
            for idx, images in zip(chunks, loaded):
                good = [(i, im) for i, im in zip(idx, images) if not isinstance(im, str)]
                for i, im in zip(idx, images):
                    if isinstance(im, str):
                        errors[i] = im
                if good:
                    probs.append(runtime.infer(imaging.to_batch([im for _, im in good])))
                    ok += [i for i, _ in good]
                if prog is not None:
                    prog.advance(task, len(idx))
    finally:
        if prog is not None:
            prog.stop()
    out = np.concatenate(probs) if probs else np.zeros((0, runtime.bundle.num_classes), np.float32)
    return out, ok, errors


def predict_paths(bundle: Bundle | str, paths: list[str], backend: str | None = None,
                  precision: str = "fp32", batch_size: int = 32, **options: Any) -> list[Prediction]:
    """Predict every image in ``paths`` (files or folders); unreadable files get an ``error``."""
    from edgecat.runtime import default_backend, open_runtime

    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    files = [str(p) for p in imaging.list_images(paths)]
    if not files:
        raise EdgecatError(f"no images found in {', '.join(map(str, paths))}")
    with open_runtime(bundle, backend or default_backend(bundle, precision), precision, **options) as rt:
        probs, ok, errors = run_files(rt, files, batch_size)
    return to_predictions(bundle, files, probs, ok, errors)


def to_predictions(bundle: Bundle, files: list[str], probs: np.ndarray, ok: list[int],
                   errors: dict[int, str]) -> list[Prediction]:
    """:func:`run_files`' output as one Prediction per file, in order; unreadable ones carry ``error``."""
    labels = bundle.labels_from_probs(probs) if len(probs) else []
    by_index = {i: (labels[k], probs[k]) for k, i in enumerate(ok)}
    out = []
    for i, f in enumerate(files):
        if i in by_index:
            label, p = by_index[i]
            idx = bundle.classes.index(label)
            out.append(Prediction(f, label, float(p[idx]), {c: float(v) for c, v in zip(bundle.classes, p)}))
        else:
            out.append(Prediction(f, None, None, error=errors.get(i, "unreadable")))
    return out


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC-AUC and the confusion matrix."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=int)
    binary = len(classes) == 2
    y_pred = (probs[:, 1] >= threshold).astype(int) if binary else probs.argmax(axis=1)
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
    bundle: Bundle | str, data: str | None = None, backend: str | None = None, precision: str = "fp32",
    batch_size: int = 32, write: bool = True, plots: bool = True, **options: Any,
) -> EvalResult:
    """Evaluate on ``data`` (a labelled folder) or the bundle's own validation split.

    With ``write``, metrics go to the manifest and plots to ``plots/``: Keras on the bundle's own
    split is the training result (``metrics.json``, ``confusion_matrix.png``, key ``validation``);
    any other run gets its own files and key (``metrics-onnxruntime-int8.json``, key
    ``onnxruntime/int8``) so it never overwrites the training figures.
    """
    from edgecat.data import checked, discover
    from edgecat.runtime import default_backend, open_runtime
    from edgecat.splits import validation_files

    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    if data:
        ds = checked(discover(data, evaluation=True))
        unknown = sorted(set(ds.classes) - set(bundle.classes))
        if unknown:
            raise EdgecatError(f"{data} has classes the model does not know: {', '.join(unknown)} "
                               f"(model classes: {', '.join(bundle.classes)})")
        files = ds.val.files
        y = np.asarray([bundle.classes.index(ds.classes[i]) for i in ds.val.labels])
        source = data
    else:
        pairs = validation_files(bundle)
        if not pairs:
            raise EdgecatError(f"{bundle.path} has no validation images on this machine: pass --data DIR")
        files = [f for f, _ in pairs]
        y = np.asarray([lab for _, lab in pairs])
        source = "bundle validation split"
    backend = backend or default_backend(bundle, precision)
    with open_runtime(bundle, backend, precision, **options) as rt:
        probs, ok, errors = run_files(rt, files, batch_size, progress=True)
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
        _record(bundle, result, files, own, plots)
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


def _record(bundle: Bundle, result: EvalResult, images: list[Any], own: bool, plots: bool,
            grid: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Metrics file, plots and manifest entry; a run other than the training result gets its own
    names (``-backend-precision``) so it never overwrites the training figures."""
    metrics = result.metrics
    backend, precision = metrics["backend"], metrics["model_precision"]
    suffix = "" if own else f"-{backend}-{precision}"
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
    key = "validation" if own else f"{backend}/{precision}"
    bundle.manifest.setdefault("metrics", {})[key] = {
        k: metrics[k] for k in ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "data")
    }
    bundle.save()
