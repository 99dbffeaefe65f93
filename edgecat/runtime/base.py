"""One small interface over every inference runtime, in the style of Polygraphy's runners.

A runtime opens one bundle artifact and turns a batch of raw RGB images (NHWC, 0-255, float32 or
uint8) into class probabilities (N, C). predict, evaluate, bench and stream only ever talk to this
interface, so none of them special-cases a backend.
"""

from __future__ import annotations

import abc
import time
from typing import Any

import numpy as np

from edgecat.bundle import Bundle
from edgecat.machine import physical_cores


def as_model_input(batch: np.ndarray, uint8: bool) -> np.ndarray:
    """An NHWC batch (a single HWC image becomes a batch of one), contiguous, in the graph's input dtype."""
    batch = np.asarray(batch)
    if batch.ndim == 3:
        batch = batch[None]
    return np.ascontiguousarray(batch.astype(np.uint8 if uint8 else np.float32, copy=False))


class Runtime(abc.ABC):
    """Base class: subclasses implement :meth:`_load`, :meth:`_run` and optionally :meth:`close`;
    callers use :meth:`infer`, :meth:`infer_raw`, :meth:`prepare` + :meth:`run_prepared`."""

    #: backend name as used on the command line (``onnxruntime``, ``keras``, ...)
    backend: str = ""

    def __init__(self, bundle: Bundle, precision: str = "fp32", **options: Any) -> None:
        self.bundle = bundle
        self.precision = precision
        self.options = options
        self.last_inference_ms: float = float("nan")
        self.artifact_key: str | None = None
        self._closed = False
        self._load()

    # -- to implement -------------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self) -> None:
        """Open the model; raise EdgecatError with one clear line if that is impossible."""

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on a prepared NHWC batch and return its raw output."""

    def close(self) -> None:
        self._closed = True

    # -- shared -------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        return self.bundle.input_size

    def warm_up(self, batch: int = 1) -> np.ndarray:
        """One call on black frames, its class probabilities returned: a fresh model's first run
        (kernel choice, memory) is not what a timing or a stream's first frame should pay."""
        h, w = self.input_size
        return self.infer(np.zeros((batch, h, w, 3), np.uint8))

    @property
    def model_bytes(self) -> int:
        if self.artifact_key and self.bundle.has(self.artifact_key):
            return int(self.bundle.artifacts[self.artifact_key].get("bytes", 0))
        return 0

    def gpu_memory_bytes(self) -> int | None:
        """GPU memory in use, for bench's report; None for runtimes that do not use a GPU."""
        return None

    @property
    def description(self) -> str:
        return f"{self.backend}/{self.precision}"

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """Bring a batch to the dtype the model takes; raw 0-255 values are never rescaled here."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.dtype != np.float32:
            batch = batch.astype(np.float32)
        return np.ascontiguousarray(batch)

    def run_prepared(self, prepared: np.ndarray) -> np.ndarray:
        """The model call alone on a batch :meth:`prepare` already made: what bench times as
        "model only" (no conversion, no postprocessing) and what :meth:`infer_raw` wraps."""
        return self._run(prepared)

    def infer_raw(self, batch: np.ndarray) -> np.ndarray:
        """Model output without postprocessing; the time of the model call alone is recorded."""
        prepared = self.prepare(batch)
        t0 = time.perf_counter()
        out = self.run_prepared(prepared)
        self.last_inference_ms = (time.perf_counter() - t0) * 1000.0
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Batch of raw RGB images -> class probabilities (N, C)."""
        return self.bundle.class_probs(self.infer_raw(batch))

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description} {self.bundle.path}>"


def run_chunked(rt: Runtime, images: np.ndarray, batch: int, raw: bool = False) -> np.ndarray:
    """``images`` through ``rt`` ``batch`` at a time, the outputs concatenated: class probabilities,
    or the model's raw outputs with ``raw``. Keeps a large set within the model's batch limit and
    memory."""
    run = rt.infer_raw if raw else rt.infer
    step = max(1, int(batch))
    return np.concatenate([run(images[i:i + step]) for i in range(0, len(images), step)])


__all__ = ["Runtime", "as_model_input", "physical_cores", "run_chunked"]
