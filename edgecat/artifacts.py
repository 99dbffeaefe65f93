"""Every kind of file a bundle can hold, named once.

An artifact kind says what it is (manifest key, file name, format, precision, flavour), what it is
made from and with which ``edgecat export`` flag, and which backends load it. The exporters, the
runtimes, the precision table, the Triton/DeepStream writers and the CLI's choices all read this
table, as Ultralytics' ``export_formats()`` is read by its exporter, CLI and validation; adding a
format is one entry here plus its exporter and its runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from edgecat.errors import EdgecatError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ArtifactKind:
    key: str
    #: file name inside the bundle (TensorRT engines: a pattern, see :func:`engine_file`)
    file: str
    #: keras | h5 | onnx | tflite | engine
    format: str
    precision: str
    #: INT8 only: "cpu" (uint8 activations, ONNX Runtime's x86 fast path) or "trt" (TensorRT's Q/DQ rules)
    flavour: str | None = None
    #: the artifact it is made from (None: made by training)
    made_from: str | None = None
    #: what re-makes it: the ``edgecat export`` flags, or "train"
    export_flags: str = ""
    #: backends that load it (TensorRT and Triton: also the engines built from it)
    backends: tuple[str, ...] = ()
    #: judged as Q/DQ arithmetic on the CPU (built for an engine, not for this CPU's int8 kernels)
    simulated: bool = False
    #: a row of the precision table (scored side by side on one labelled set)
    scored: bool = False


_ORT = ("onnxruntime", "onnxruntime-cuda", "openvino")

ARTIFACTS: dict[str, ArtifactKind] = {a.key: a for a in (
    ArtifactKind("keras", "model.keras", "keras", "fp32", export_flags="train",
                 backends=("keras", "keras-predict")),
    ArtifactKind("keras-h5", "model.h5", "h5", "fp32", made_from="keras", export_flags="--h5"),
    ArtifactKind("onnx-fp32", "model.onnx", "onnx", "fp32", made_from="keras", export_flags="--onnx",
                 backends=(*_ORT, "onnxruntime-trt", "tensorrt", "triton"), scored=True),
    ArtifactKind("onnx-fp16", "model.fp16.onnx", "onnx", "fp16", made_from="onnx-fp32", export_flags="--fp16",
                 backends=(*_ORT, "onnxruntime-trt", "tensorrt", "triton"), scored=True),
    ArtifactKind("onnx-int8", "model.int8.onnx", "onnx", "int8", flavour="cpu", made_from="onnx-fp32",
                 export_flags="--int8 --calib DIR", backends=(*_ORT, "triton"), scored=True),
    ArtifactKind("onnx-int8-trt", "model.int8-trt.onnx", "onnx", "int8", flavour="trt", made_from="onnx-fp32",
                 export_flags="--int8 --calib DIR", backends=("onnxruntime-trt", "tensorrt", "triton"),
                 simulated=True, scored=True),
    ArtifactKind("tflite-fp32", "model.fp32.tflite", "tflite", "fp32", made_from="keras",
                 export_flags="--tflite --tflite-precision fp32", backends=("litert",), scored=True),
    ArtifactKind("tflite-fp16", "model.fp16.tflite", "tflite", "fp16", made_from="keras",
                 export_flags="--tflite --tflite-precision fp16", backends=("litert",), scored=True),
    ArtifactKind("tflite-int8", "model.int8.tflite", "tflite", "int8", made_from="keras",
                 export_flags="--tflite --tflite-precision int8 --calib DIR", backends=("litert",), scored=True),
    # TensorRT engines: file named by GPU, compute capability, TensorRT version and precision
    ArtifactKind("trt-fp32", "model.{target}.fp32.engine", "engine", "fp32", made_from="onnx-fp32",
                 export_flags="--trt --precision fp32", backends=("tensorrt",)),
    ArtifactKind("trt-fp16", "model.{target}.fp16.engine", "engine", "fp16", made_from="onnx-fp16",
                 export_flags="--trt --precision fp16", backends=("tensorrt",)),
    ArtifactKind("trt-int8", "model.{target}.int8.engine", "engine", "int8", made_from="onnx-int8-trt",
                 export_flags="--trt --precision int8", backends=("tensorrt",)),
)}


@dataclass(frozen=True)
class ExportDefaults:
    """What ``edgecat export`` does when a flag is not given: the CLI, ExportPlan and the exporters
    all read these."""

    #: FP16: largest logit change against FP32, relative to the largest |logit|, plus an absolute floor
    fp16_tolerance: float = 2e-2
    fp16_logit_floor: float = 5e-2
    calib_size: int = 500  # NVIDIA's guidance for ImageNet-style classifiers
    #: "auto": minmax, then percentile and entropy where minmax's file changes FP32's answers on
    #: held-out images (heavy-tailed activations, e.g. swish networks: README "INT8 that keeps the accuracy")
    calib_method: str = "auto"
    #: which images are drawn when the calibration folder (or training split) holds more than calib_size;
    #: another seed draws others (a file's accuracy moves by a few photos between draws: README "INT8
    #: that keeps the accuracy")
    calib_seed: int = 0
    calib_methods: tuple[str, ...] = ("auto", "minmax", "entropy", "percentile")
    #: TensorRT engine profile (min, opt, max batch) and builder workspace
    trt_batch: str = "1,8,32"
    workspace_gb: float = 2.0
    #: Triton max_batch_size
    max_batch: int = 32
    opset: int = 17
    tflite_precisions: tuple[str, ...] = PRECISIONS


EXPORT = ExportDefaults()


def kind(key: str) -> ArtifactKind:
    if key not in ARTIFACTS:
        raise EdgecatError(f"unknown artifact '{key}' (known: {', '.join(ARTIFACTS)})")
    return ARTIFACTS[key]


def file_of(key: str) -> str:
    return kind(key).file


def onnx(precision: str, flavour: str | None = None) -> ArtifactKind:
    """The ONNX artifact of a precision (INT8: the ``cpu`` flavour unless ``flavour`` says)."""
    return find("onnx", precision, flavour or ("cpu" if precision == "int8" else None))


def find(fmt: str, precision: str, flavour: str | None = None) -> ArtifactKind:
    for a in ARTIFACTS.values():
        if a.format == fmt and a.precision == precision and a.flavour == flavour:
            return a
    raise EdgecatError(f"no {fmt} artifact at {precision}" + (f" ({flavour})" if flavour else ""))


def engine_file(precision: str, target: str) -> str:
    """``model.<gpu-slug>-sm<cc>-trt<ver>.<prec>.engine``: engines are not portable across GPUs or versions."""
    return find("engine", precision).file.format(target=target)


def for_backend(backend: str, precision: str) -> ArtifactKind | None:
    """The artifact ``backend`` runs at ``precision`` (None: it runs none, e.g. Keras at int8)."""
    for a in ARTIFACTS.values():
        if backend in a.backends and a.precision == precision and a.format != "engine":
            return a  # TensorRT: the ONNX an engine is built from; engines are found by target
    return None


def precisions_of(backend: str) -> tuple[str, ...]:
    """The precisions ``backend`` runs, in :data:`PRECISIONS` order (Keras: fp32 only)."""
    return tuple(p for p in PRECISIONS if for_backend(backend, p) is not None)


def scored() -> Iterator[ArtifactKind]:
    """The precision table's rows, in order."""
    return (a for a in ARTIFACTS.values() if a.scored)


def export_command(bundle_path: object, key: str) -> str:
    """The command that (re-)makes artifact ``key``: the fix an error message should carry."""
    flags = kind(key).export_flags
    if flags == "train":
        return f"edgecat train ... --out {bundle_path}"
    return f"edgecat export {bundle_path}" + (f" {flags}" if flags else "")


__all__ = ["ARTIFACTS", "EXPORT", "PRECISIONS", "ArtifactKind", "ExportDefaults", "engine_file", "export_command", "file_of", "find",
           "for_backend", "kind", "onnx", "precisions_of", "scored"]
