"""Inference runtimes behind one interface; each imported only when it is asked for."""

from __future__ import annotations

import importlib
from typing import Any

from edgecat import artifacts
from edgecat.artifacts import PRECISIONS
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime, physical_cores

#: backend name -> "module:Class"; adding a runtime is one line here and one module.
BACKENDS: dict[str, str] = {
    "keras-predict": "edgecat.runtime.keras.runner:KerasPredictRuntime",
    "keras": "edgecat.runtime.keras.runner:KerasFunctionRuntime",
    "onnxruntime": "edgecat.runtime.onnxruntime.runner:OnnxRuntimeCPU",
    "onnxruntime-cuda": "edgecat.runtime.onnxruntime.runner:OnnxRuntimeCUDA",
    "onnxruntime-trt": "edgecat.runtime.onnxruntime.runner:OnnxRuntimeTensorRT",
    "tensorrt": "edgecat.runtime.tensorrt.runner:TensorRTRuntime",
    "triton": "edgecat.runtime.triton.runner:TritonRuntime",
}


def runtime_class(backend: str) -> type[Runtime]:
    spec = BACKENDS.get(backend)
    if spec is None:
        raise EdgecatError(f"unknown backend '{backend}' (choose from: {', '.join(BACKENDS)})")
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
    if precision not in PRECISIONS:
        raise EdgecatError(f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    cls = runtime_class(backend)
    check_runnable(bundle, backend, precision)
    return cls(bundle, precision=precision, **options)


def default_backend(bundle: Bundle, precision: str = "fp32") -> str:
    """ONNX Runtime when the bundle has an ONNX model or a precision Keras cannot run, else Keras
    (right after training)."""
    if bundle.has(artifacts.onnx("fp32").key) or precision != "fp32":
        return "onnxruntime"
    return "keras"


__all__ = ["BACKENDS", "KERAS_BACKENDS", "PRECISIONS", "Runtime", "check_runnable", "default_backend",
           "open_runtime", "physical_cores", "required_artifact", "runtime_class"]
