"""Every inference backend, named once, beside the artifact table (:mod:`edgecat.artifacts`).

A backend says which Runtime class runs it, which distribution (and edgecat extra) brings its
library, whether it runs on the CPU or an NVIDIA GPU, which file format it opens, whether
``--backend auto`` may try it, and its one-line help. ``runtime.BACKENDS``, auto's candidates, the
CLI's ``--backend`` choices and help lines, bench's default rows and Triton's platform names are all
read from here; the precisions a backend runs come from the artifact table (the files it loads).
Adding a backend is one entry here plus its folder ``runtime/<name>/`` (loader.py, runner.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from edgecat import artifacts
from edgecat.errors import EdgecatError

#: the measured choice (edgecat.select): accepted wherever a backend is named, never a Runtime itself
AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    name: str
    #: "module:Class" of its Runtime (imported only when the backend is opened)
    runner: str
    #: the Python module whose presence means the backend can run here
    module: str
    #: the distribution that brings that module, and the edgecat extra that installs it ("" : a core dependency)
    dist: str
    extra: str
    #: "cpu" or "gpu" (needs an NVIDIA GPU)
    device: str
    #: the artifact format it opens (artifacts.ArtifactKind.format)
    format: str
    #: ``--backend auto`` may time it
    auto: bool
    #: the help line the CLI shows for it
    help: str
    #: Triton's name for the model format it serves (None: not a Triton platform)
    triton_platform: str | None = None

    @property
    def installed(self) -> bool:
        """Its library can be imported here (looked up, not imported)."""
        return importlib.util.find_spec(self.module) is not None

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions it runs: those of the files it loads (Keras: fp32 only)."""
        return artifacts.precisions_of(self.name)

    def artifact_key(self, precision: str) -> str | None:
        """Manifest key of the file it runs at ``precision`` (TensorRT: engines at that precision)."""
        found = [a for a in artifacts.ARTIFACTS.values()
                 if self.name in a.backends and a.precision == precision and a.format == self.format]
        if not found:
            return None
        return (artifacts.onnx(precision) if self.format == "onnx" and len(found) > 1 else found[0]).key


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("keras-predict", "edgecat.runtime.keras.runner:KerasPredictRuntime", "keras", "keras", "train",
            "cpu", "keras", auto=False, help="Keras model.predict, the baseline"),
    Backend("keras", "edgecat.runtime.keras.runner:KerasFunctionRuntime", "keras", "keras", "train",
            "cpu", "keras", auto=False, help="Keras model called as a compiled function"),
    Backend("onnxruntime", "edgecat.runtime.onnxruntime.runner:OnnxRuntimeCPU", "onnxruntime", "onnxruntime", "",
            "cpu", "onnx", auto=True, help="ONNX Runtime on the CPU", triton_platform="onnxruntime_onnx"),
    Backend("onnxruntime-cuda", "edgecat.runtime.onnxruntime.runner:OnnxRuntimeCUDA", "onnxruntime",
            "onnxruntime-gpu", "", "gpu", "onnx", auto=True, help="ONNX Runtime, CUDA provider"),
    Backend("onnxruntime-trt", "edgecat.runtime.onnxruntime.runner:OnnxRuntimeTensorRT", "onnxruntime",
            "onnxruntime-gpu", "", "gpu", "onnx", auto=False, help="ONNX Runtime, TensorRT provider"),
    Backend("tensorrt", "edgecat.runtime.tensorrt.runner:TensorRTRuntime", "tensorrt", "tensorrt", "tensorrt",
            "gpu", "engine", auto=True, help="native TensorRT engines", triton_platform="tensorrt_plan"),
    Backend("triton", "edgecat.runtime.triton.runner:TritonRuntime", "tritonclient", "tritonclient", "triton",
            "gpu", "onnx", auto=False, help="a Triton server at --url"),
    Backend("openvino", "edgecat.runtime.openvino.runner:OpenVINORuntime", "openvino", "openvino", "openvino",
            "cpu", "onnx", auto=True, help="OpenVINO over the ONNX files"),
    Backend("litert", "edgecat.runtime.litert.runner:LiteRTRuntime", "ai_edge_litert", "ai-edge-litert", "litert",
            "cpu", "tflite", auto=True, help="LiteRT (TFLite) files, no TensorFlow"),
)}

#: the distributions whose versions a measured choice depends on
RUNTIME_DISTS: tuple[str, ...] = tuple(dict.fromkeys(b.dist for b in BACKENDS.values() if b.auto))


def get(name: str) -> Backend:
    if name not in BACKENDS:
        raise EdgecatError(f"unknown backend '{name}' (choose from: {', '.join(choices())})")
    return BACKENDS[name]


def choices() -> list[str]:
    """What ``--backend`` accepts: auto, then every backend."""
    return [AUTO, *BACKENDS]


def help_line(prefix: str = "Runtime:") -> str:
    """``--backend``'s help: every choice with what it is."""
    parts = [f"{AUTO} (the fastest measured on this machine)"]
    parts += [f"{b.name} ({b.help})" for b in BACKENDS.values()]
    return f"{prefix} {', '.join(parts)}."


def auto_candidates(gpu: bool) -> list[Backend]:
    """The backends ``--backend auto`` may time here (GPU ones only where a GPU is)."""
    return [b for b in BACKENDS.values() if b.auto and (gpu or b.device == "cpu")]


def by_format(fmt: str) -> list[Backend]:
    return [b for b in BACKENDS.values() if b.format == fmt]


def keras_backends() -> tuple[str, ...]:
    return tuple(b.name for b in by_format("keras"))


#: what ``edgecat bench`` runs when no --backend is given (auto is added where the bundle has exports)
DEFAULT_BENCH: tuple[str, ...] = (*keras_backends(), "onnxruntime")


__all__ = ["AUTO", "BACKENDS", "DEFAULT_BENCH", "RUNTIME_DISTS", "Backend", "auto_candidates", "by_format",
           "choices", "get", "help_line", "keras_backends"]
