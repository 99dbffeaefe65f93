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


#: the ONNX model each ONNX Runtime precision runs
ONNX_ARTIFACT = {"fp32": "onnx-fp32", "fp16": "onnx-fp16", "int8": "onnx-int8"}
KERAS_BACKENDS = ("keras", "keras-predict")


def required_artifact(backend: str, precision: str) -> str | None:
    """Manifest key of the ONNX/Keras model ``backend`` runs at ``precision`` (None: not checked here)."""
    if backend in KERAS_BACKENDS:
        return "keras"
    if backend.startswith("onnxruntime"):
        return ONNX_ARTIFACT[precision]
    return None  # TensorRT engines: load_engine says what to build, after checking TensorRT is here


def export_command(bundle: Bundle, key: str) -> str:
    """The command that adds artifact ``key`` to ``bundle``: the fix an error message should carry."""
    base = f"edgecat export {bundle.path}"
    if key == "onnx-fp32":
        return base
    if key == "onnx-fp16":
        return f"{base} --fp16"
    if key in ("onnx-int8", "onnx-int8-trt"):
        return f"{base} --int8 --calib DIR"
    return f"edgecat train ... --out {bundle.path}"


def check_runnable(bundle: Bundle, backend: str, precision: str) -> None:
    """Refuse, with the command that fixes it, a backend/precision the bundle has no model for."""
    if backend in KERAS_BACKENDS and precision != "fp32":
        raise EdgecatError(
            f"the Keras model runs fp32 only; {precision} runs on ONNX Runtime or TensorRT once exported: "
            f"{export_command(bundle, ONNX_ARTIFACT[precision])}, then --backend onnxruntime"
        )
    key = required_artifact(backend, precision)
    if key is not None and not bundle.has(key):
        raise EdgecatError(f"{backend} {precision} needs {key}, which {bundle.path} does not have yet: "
                           f"run {export_command(bundle, key)}")


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


def default_backend(bundle: Bundle, precision: str = "fp32") -> str:
    """``auto`` (the fastest measured backend, edgecat/autoselect.py) when the bundle has exports;
    ONNX Runtime for a precision Keras cannot run (its error names the export command); else Keras
    (right after training)."""
    from edgecat.artifacts import ARTIFACTS

    exported = [a for a in ARTIFACTS.values() if a.format in ("onnx", "tflite") and bundle.has(a.key)]
    if precision not in ("fp32", "auto") and not any(a.precision == precision for a in exported):
        return "onnxruntime"  # nothing at that precision yet: its error names the export command
    if exported:
        return "auto"
    if precision != "fp32":
        return "onnxruntime"
    return "keras"


__all__ = ["BACKENDS", "PRECISIONS", "Runtime", "check_runnable", "default_backend", "export_command",
           "open_runtime", "physical_cores", "required_artifact", "runtime_class"]
