"""Inference runtimes behind one interface; each imported only when it is asked for."""

from __future__ import annotations

import importlib
from typing import Any

from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime, physical_cores

#: backend name -> "module:Class"; adding a runtime is one line here and one module.
BACKENDS: dict[str, str] = {
    "keras-predict": "edgecat.runtime.keras_runtime:KerasPredictRuntime",
    "keras": "edgecat.runtime.keras_runtime:KerasFunctionRuntime",
    "onnxruntime": "edgecat.runtime.onnxruntime_runtime:OnnxRuntimeCPU",
    "onnxruntime-cuda": "edgecat.runtime.onnxruntime_runtime:OnnxRuntimeCUDA",
    "onnxruntime-trt": "edgecat.runtime.onnxruntime_runtime:OnnxRuntimeTensorRT",
    "tensorrt": "edgecat.runtime.tensorrt_runtime:TensorRTRuntime",
    "triton": "edgecat.runtime.triton_runtime:TritonRuntime",
    # issue 12: CPU runtimes beside ONNX Runtime
    "openvino": "edgecat.runtime.openvino_runtime:OpenVINORuntime",
    "litert": "edgecat.runtime.litert_runtime:LiteRTRuntime",
}

PRECISIONS = ("fp32", "fp16", "int8")


def runtime_class(backend: str) -> type[Runtime]:
    spec = BACKENDS.get(backend)
    if spec is None:
        raise EdgecatError(f"unknown backend '{backend}' (choose from: auto, {', '.join(BACKENDS)})")
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def open_runtime(
    bundle: Bundle | str, backend: str = "onnxruntime", precision: str = "fp32", **options: Any
) -> Runtime:
    """Open ``bundle`` with ``backend`` at ``precision``; every failure is an EdgecatError line."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    if backend == "auto":  # issue 12: measured choice, see edgecat/autoselect.py
        from edgecat.autoselect import open_auto

        return open_auto(bundle, precision, **options)
    if precision not in PRECISIONS:
        raise EdgecatError(f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    return runtime_class(backend)(bundle, precision=precision, **options)


def default_backend(bundle: Bundle) -> str:
    """``auto`` (the fastest measured backend, edgecat/autoselect.py) when the bundle has exports,
    else Keras (right after training)."""
    if bundle.has("onnx-fp32") or bundle.has("tflite-fp32"):
        return "auto"
    return "keras"


__all__ = ["BACKENDS", "PRECISIONS", "Runtime", "default_backend", "open_runtime", "physical_cores", "runtime_class"]
