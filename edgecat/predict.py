"""Predict through the runtime interface: files or folders in, one Prediction per file out.

Images go through the shared edge image path (edgecat.imaging), exactly what deployment does; the
next batch is decoded while the current one runs. Unreadable files get an ``error``, never an
exception, so one bad file does not lose the rest of a run.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecat import imaging
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError

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
            loaded = pool.map(lambda idx: imaging.load_batch([files[i] for i in idx], size), chunks)
            for idx, batch in zip(chunks, loaded):
                errors.update({idx[k]: why for k, why in batch.errors.items()})
                if batch.kept:
                    probs.append(runtime.infer(batch.images))
                    ok += [idx[k] for k in batch.kept]
                if prog is not None:
                    prog.advance(task, len(idx))
    finally:
        if prog is not None:
            prog.stop()
    out = np.concatenate(probs) if probs else np.zeros((0, runtime.bundle.num_classes), np.float32)
    return out, ok, errors


def predict_paths(bundle: Bundle | str, paths: list[str], backend: str | None = None,
                  precision: str | None = None, batch_size: int = 32, **options: Any) -> list[Prediction]:
    """Predict every image in ``paths`` (files or folders); unreadable files get an ``error``.
    ``backend``/``precision`` None: :func:`edgecat.runtime.resolve_defaults`."""
    from edgecat.select import open_backend
    from edgecat.signing import open_trusted

    bundle = open_trusted(bundle)  # $EDGECAT_TRUSTED_KEYS set: only a signed, unchanged bundle runs
    files = [str(p) for p in imaging.list_images(paths)]
    if not files:
        raise EdgecatError(f"no images found in {', '.join(map(str, paths))}")
    rt, _ = open_backend(bundle, backend, precision, **options)
    with rt:
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
