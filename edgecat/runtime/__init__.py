"""Inference runtimes behind one interface, one folder per backend (``loader``: opens the artifact, ``runner``:
the Runtime); each imported only when it is asked for. The only code that opens a bundle artifact."""

from __future__ import annotations

import importlib
from typing import Any

from edgecat import artifacts
from edgecat.artifacts import PRECISIONS
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime, physical_cores

#: backend name -> "module:Class"; adding a runtime is one line here and one folder (loader.py, runner.py)
BACKENDS: dict[str, str] = {
    "keras-predict": "edgecat.runtime.keras.runner:KerasPredictRuntime",
    "keras": "edgecat.runtime.keras.runner:KerasFunctionRuntime",
    "onnxruntime": "edgecat.runtime.onnxruntime.runner:OnnxRuntimeCPU",
    "onnxruntime-cuda": "edgecat.runtime.onnxruntime.runner:OnnxRuntimeCUDA",
    "onnxruntime-trt": "edgecat.runtime.onnxruntime.runner:OnnxRuntimeTensorRT",
    "tensorrt": "edgecat.runtime.tensorrt.runner:TensorRTRuntime",
    "triton": "edgecat.runtime.triton.runner:TritonRuntime",
    "openvino": "edgecat.runtime.openvino.runner:OpenVINORuntime",
    "litert": "edgecat.runtime.litert.runner:LiteRTRuntime",
}


def runtime_class(backend: str) -> type[Runtime]:
    spec = BACKENDS.get(backend)
    if spec is None:
        raise EdgecatError(f"unknown backend '{backend}' (choose from: auto, {', '.join(BACKENDS)})")
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


KERAS_BACKENDS = tuple(artifacts.kind("keras").backends)
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
    if backend == "auto":  # issue 12: measured choice, see edgecat/autoselect.py
        from edgecat.autoselect import open_auto

        return open_auto(bundle, precision, **options)
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
    edgecat/autoselect.py), else FP32; a precision given alone still lets auto pick the backend."""
    if backend is None:
        backend = default_backend(bundle, precision or "fp32")
    if precision is None:
        precision = "auto" if backend == "auto" else "fp32"
    return backend, precision


def default_backend(bundle: Bundle, precision: str = "fp32") -> str:
    """``auto`` (the fastest measured backend, edgecat/autoselect.py) when the bundle has exports;
    ONNX Runtime for a precision Keras cannot run (its error names the export command); else Keras
    (right after training)."""
    exported = [a for a in artifacts.ARTIFACTS.values() if a.format in ("onnx", "tflite") and bundle.has(a.key)]
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
