"""Inference runtimes behind one interface, one folder per backend (``loader``: opens the artifact, ``runner``:
the Runtime); each imported only when it is asked for. The only code that opens a bundle artifact.

This is mechanism: it opens the backend it is told. Which backend ``auto`` stands for is decided
above it, by :mod:`edgecat.select`, which nothing here imports."""

from __future__ import annotations

import importlib
from typing import Any

from edgecat import artifacts, backends
from edgecat.artifacts import PRECISIONS
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime, physical_cores

#: backend name -> "module:Class", from the backend table (edgecat/backends.py); adding a runtime is one
#: entry there and one folder here (loader.py, runner.py)
BACKENDS: dict[str, str] = {name: b.runner for name, b in backends.BACKENDS.items()}


def runtime_class(backend: str) -> type[Runtime]:
    if backend == backends.AUTO:
        raise EdgecatError("backend auto is chosen by measurement: open it with edgecat.select.open_backend")
    module, cls = backends.get(backend).runner.split(":")
    return getattr(importlib.import_module(module), cls)


KERAS_BACKENDS = backends.keras_backends()
#: backends whose model is not checked here: TensorRT engines (load_engine says what to build, after
#: checking TensorRT is here) and models a Triton server serves
UNCHECKED_BACKENDS = ("tensorrt", "triton")


def required_artifact(backend: str, precision: str) -> str | None:
    """Manifest key of the bundle file ``backend`` runs at ``precision``, from the artifact registry
    (None: not checked here)."""
    if backend in UNCHECKED_BACKENDS:
        return None
    found = artifacts.for_backend(backend, precision)
    return found.key if found else None


def check_runnable(bundle: Bundle, backend: str, precision: str) -> None:
    """Refuse, with the command that fixes it, a backend/precision the bundle has no model for."""
    if backend in KERAS_BACKENDS and precision != "fp32":
        raise EdgecatError(
            f"the Keras model runs fp32 only; {precision} runs on ONNX Runtime or TensorRT once exported: "
            f"{artifacts.export_command(bundle.path, artifacts.onnx(precision).key)}, then --backend onnxruntime"
        )
    key = required_artifact(backend, precision)
    if key is not None and not bundle.has(key):
        raise EdgecatError(f"{backend} {precision} needs {key}, which {bundle.path} does not have yet: "
                           f"run {artifacts.export_command(bundle.path, key)}")


def open_runtime(
    bundle: Bundle | str, backend: str = "onnxruntime", precision: str = "fp32", **options: Any
) -> Runtime:
    """Open ``bundle`` with ``backend`` at ``precision``; every failure is an EdgecatError line,
    and a model the bundle lacks is named with the export command that makes it."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    if precision == "auto":
        raise EdgecatError("--precision auto is chosen by measurement: use it with --backend auto")
    if precision not in PRECISIONS:
        raise EdgecatError(f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    cls = runtime_class(backend)
    check_runnable(bundle, backend, precision)
    return cls(bundle, precision=precision, **options)


def resolve_defaults(bundle: Bundle, backend: str | None, precision: str | None) -> tuple[str, str]:
    """What predict/evaluate/stream run when the user names no backend or precision: ``auto`` for both
    when the bundle has exports (the fastest backend x precision here whose labels agree with FP32,
    decided by edgecat.select), else FP32; a precision given alone still lets auto pick the backend."""
    if backend is None:
        backend = default_backend(bundle, precision or "fp32")
    if precision is None:
        precision = "auto" if backend == "auto" else "fp32"
    return backend, precision


def default_backend(bundle: Bundle, precision: str = "fp32") -> str:
    """``auto`` (the fastest measured backend, decided by edgecat.select) when the bundle has exports;
    ONNX Runtime for a precision Keras cannot run (its error names the export command); else Keras
    (right after training)."""
    auto_formats = {b.format for b in backends.auto_candidates(gpu=False)}
    exported = [a for a in artifacts.ARTIFACTS.values() if a.format in auto_formats and bundle.has(a.key)]
    if precision not in ("fp32", "auto") and not any(a.precision == precision for a in exported):
        return "onnxruntime"  # nothing at that precision yet: its error names the export command
    if exported:
        return "auto"
    if precision != "fp32":
        return "onnxruntime"
    return "keras"


__all__ = [
    "BACKENDS",
    "KERAS_BACKENDS",
    "PRECISIONS",
    "Runtime",
    "check_runnable",
    "default_backend",
    "open_runtime",
    "physical_cores",
    "required_artifact",
    "resolve_defaults",
    "runtime_class",
]
