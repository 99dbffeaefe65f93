"""TensorRT engines built on the machine that will run them (TensorRT 10 and 11), no TensorFlow.

Engines are not portable across GPUs or TensorRT versions, so each engine file is named by GPU
(name + compute capability), TensorRT version and precision, and its manifest entry records them;
:func:`load_engine` refuses a stale engine with the command that rebuilds it.

Precision comes from the ONNX graph, never from builder flags: every network is created strongly
typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: required on TensorRT 10, accepted and ignored
on 11 where strong typing is always on), FP16 is built from ``onnx-fp16``, INT8 from the symmetric
Q/DQ model ``onnx-int8-trt`` (checked against :mod:`edgecat.export.trt_rules` first), FP32 from
``onnx-fp32`` with TF32 cleared (TensorRT enables TF32 by default; the ONNX Runtime CUDA backend turns
it off too). So an "int8" engine is the same network on TensorRT 10 and 11: no precision flags
(removed in 11), no implicit calibrator (deprecated in 10.1, removed in 11).

Public, stable names used by ``edgecat.runtime.tensorrt_runtime``: :class:`EngineTarget`,
:func:`current_target`, :func:`engine_filename`, :func:`engine_key`, :func:`engine_problem`,
:func:`check_engine`, :func:`require_tensorrt`, :func:`load_engine`, :class:`LoadedEngine`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.fsutil import atomic_path

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 8, 32)
DEFAULT_WORKSPACE_GB = 2.0
#: the ONNX artifact each precision is built from (TensorRT 10 builds fp16 from fp32 + a flag)
SOURCE = {"fp32": "onnx-fp32", "fp16": "onnx-fp16", "int8": "onnx-int8-trt"}


# ------------------------------------------------------------------------- pure helpers (no TRT)
@dataclass(frozen=True)
class EngineTarget:
    """What an engine is tied to: GPU model, compute capability (``"8.7"``) and TensorRT version."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str

    @property
    def slug(self) -> str:
        return f"{gpu_slug(self.gpu_name)}-sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt_version}"


def gpu_slug(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'geforce-rtx-4090'; 'Orin (nvgpu)' -> 'orin-nvgpu'."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    s = re.sub(r"^nvidia-", "", s)
    return s or "gpu"


def engine_key(precision: str) -> str:
    """Manifest key of the engine for ``precision`` (``trt-fp16`` ...)."""
    if precision not in PRECISIONS:
        raise EdgecatError(f"unknown TensorRT precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    return f"trt-{precision}"


def engine_filename(target: EngineTarget, precision: str) -> str:
    """``model.<gpu-slug>-sm<cc>-trt<ver>.<prec>.engine``, e.g. ``model.orin-sm87-trt10.3.0.fp16.engine``."""
    engine_key(precision)
    return f"model.{target.slug}.{precision}.engine"


def rebuild_hint(bundle_path: str | Path, precision: str) -> str:
    return f"rebuild it here with: edgecat export {bundle_path} --trt --precision {precision}"


def engine_problem(entry: dict[str, Any], target: EngineTarget) -> str | None:
    """Why an engine entry cannot run on ``target`` (None when it can). Pure, for tests and runtimes."""
    built = entry.get("tensorrt_version")
    if built != target.tensorrt_version:
        return f"it was built with TensorRT {built}, this machine has TensorRT {target.tensorrt_version}"
    cc = entry.get("compute_capability")
    gpu = entry.get("gpu")
    if cc != target.compute_capability or (gpu and gpu_slug(gpu) != gpu_slug(target.gpu_name)):
        return (f"it was built for {gpu} (sm{str(cc).replace('.', '')}), this machine has "
                f"{target.gpu_name} (sm{target.compute_capability.replace('.', '')})")
    return None


def check_engine(bundle: Bundle, precision: str, target: EngineTarget) -> dict[str, Any]:
    """The manifest entry of the engine for ``precision`` after checking it suits ``target``;
    an EdgecatError that says how to rebuild otherwise."""
    key = engine_key(precision)
    entry = bundle.artifacts.get(key)
    if entry is None:
        raise EdgecatError(f"bundle {bundle.path} has no TensorRT {precision} engine; "
                           + rebuild_hint(bundle.path, precision).replace("rebuild it here", "build one"))
    problem = engine_problem(entry, target)
    if problem:
        raise EdgecatError(f"TensorRT engine {entry.get('file')} cannot run here: {problem}; "
                           + rebuild_hint(bundle.path, precision))
    src = SOURCE.get(entry.get("source_precision", precision), "")
    src_entry = bundle.artifacts.get(entry.get("source", src))
    if src_entry and entry.get("source_sha256") and src_entry.get("sha256") != entry["source_sha256"]:
        raise EdgecatError(f"TensorRT engine {entry.get('file')} is stale: {entry.get('source')} changed "
                           f"since it was built; " + rebuild_hint(bundle.path, precision))
    return entry


def parse_batch(value: str | tuple[int, ...] | None) -> tuple[int, int, int]:
    """'1,8,32' -> (1, 8, 32), checking 1 <= min <= opt <= max."""
    if value is None:
        return DEFAULT_BATCH
    parts = [int(p) for p in value.split(",")] if isinstance(value, str) else [int(p) for p in value]
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise EdgecatError(f"--batch wants MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX (got {value})")
    return parts[0], parts[1], parts[2]


# ------------------------------------------------------------------------- TensorRT and the GPU
def require_tensorrt() -> Any:
    """Import tensorrt or fail with one line saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); on a "
            "desktop GPU: pip install tensorrt"
        ) from exc
    except OSError as exc:  # the wheel is there but libnvinfer/CUDA libraries are not
        raise MissingDependencyError(f"TensorRT cannot load its libraries: {exc}") from exc
    return trt


def _gpu_from_driver(device: int = 0) -> tuple[str, str] | None:
    """Name and compute capability of CUDA device ``device`` (an ordinal among the visible devices,
    as the runtime's ``cudaSetDevice`` uses) through the CUDA driver API (libcuda, also on Jetson)."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    dev = ctypes.c_int()
    count = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= device:
        return None
    if cuda.cuDeviceGet(ctypes.byref(dev), device) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    return name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}"


def _gpu_from_nvidia_smi(device: int = 0) -> tuple[str, str] | None:
    """nvidia-smi numbers GPUs physically; CUDA_VISIBLE_DEVICES maps the runtime's ordinal to one."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and device >= len(visible):
        return None
    ident = visible[device] if visible else str(device)
    try:
        out = subprocess.run([exe, "-i", ident, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in line:
        return None
    name, cc = (s.strip() for s in line.rsplit(",", 1))
    return name, cc


def current_gpu(device: int = 0) -> tuple[str, str]:
    """(name, compute capability) of CUDA device ``device``, or an EdgecatError when there is none."""
    found = _gpu_from_driver(device) or _gpu_from_nvidia_smi(device)
    if not found:
        what = ("none was found here (no CUDA driver/device)" if device == 0
                else f"there is no CUDA device {device} here")
        raise EdgecatError(f"TensorRT needs an NVIDIA GPU and {what}")
    return found


def current_target(trt: Any = None, device: int = 0) -> EngineTarget:
    """The GPU ``device`` (the one the runtime selects) and the TensorRT version of this machine."""
    trt = trt or require_tensorrt()
    name, cc = current_gpu(device)
    return EngineTarget(gpu_name=name, compute_capability=cc, tensorrt_version=str(trt.__version__))


# ------------------------------------------------------------------------- build
@dataclass
class EngineBuild:
    precision: str
    key: str
    file: str
    seconds: float
    source: str
    mode: str


def _logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def _source_for(bundle: Bundle, precision: str) -> str:
    key = SOURCE[precision]
    if not bundle.has(key):
        how = {"onnx-fp32": f"edgecat export {bundle.path} --onnx",
               "onnx-fp16": f"edgecat export {bundle.path} --fp16",
               "onnx-int8-trt": f"edgecat export {bundle.path} --int8 --calib DIR"}[key]
        raise EdgecatError(f"a TensorRT {precision} engine is built from {key}, which the bundle lacks: run `{how}` first")
    if precision == "int8":
        # a file made by an older edgecat (int32 biases) would fail in TensorRT's parser: say so here
        from edgecat.export.trt_rules import require_tensorrt_onnx

        try:
            require_tensorrt_onnx(bundle.artifact_path(key))
        except EdgecatError as exc:
            raise EdgecatError(f"{exc}; re-make it with `edgecat export {bundle.path} --int8 --calib DIR`") from exc
    return key


def network_flags(trt: Any) -> int:
    """STRONGLY_TYPED: precision from the ONNX graph on TensorRT 10 (explicit quantization wants it),
    and the only mode on 11, which accepts the flag and ignores it."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def configure(trt: Any, config: Any, precision: str, workspace_gb: float) -> None:
    """Builder settings: workspace, and no precision flags at all (strongly typed); FP32 clears TF32,
    which TensorRT enables by default for FP32 convolutions and matrix multiplies."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)


def build_engine(bundle: Bundle, precision: str = "fp16", batch: tuple[int, int, int] = DEFAULT_BATCH,
                 workspace_gb: float = DEFAULT_WORKSPACE_GB, trt: Any = None) -> EngineBuild:
    """Build and record the engine for ``precision`` from the bundle's ONNX file of that precision,
    strongly typed on TensorRT 10 and 11 alike. A timing cache per GPU/TensorRT version is kept in the
    bundle so rebuilds are fast. Builds on the current CUDA device (0 unless CUDA_VISIBLE_DEVICES)."""
    trt = trt or require_tensorrt()
    target = current_target(trt)
    key = engine_key(precision)
    src_key = _source_for(bundle, precision)
    src = bundle.artifact_path(src_key)
    bmin, bopt, bmax = batch
    h, w = bundle.input_size
    input_name = bundle.artifacts[src_key].get("input", "image")

    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgecatError(f"TensorRT cannot parse {src.name}: {errors[:300]}")
    config = builder.create_builder_config()
    configure(trt, config, precision, workspace_gb)
    mode = "strongly-typed"
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (bmin, h, w, 3), (bopt, h, w, 3), (bmax, h, w, 3))
    config.add_optimization_profile(profile)

    cache_path = bundle.path / f"timing.{target.slug}.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    log.info("TensorRT %s: building %s engine from %s (%s, batch %d/%d/%d, workspace %.1f GB)",
             trt.__version__, precision, src.name, mode, bmin, bopt, bmax, workspace_gb)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EdgecatError(f"TensorRT failed to build the {precision} engine from {src.name} (see the log above)")
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    dest = bundle.path / engine_filename(target, precision)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(bytes(serialized))
    log.info("TensorRT %s engine: %s (%.1f s)", precision, dest.name, seconds)
    bundle.add_artifact(
        key, dest, format="tensorrt", precision=precision,
        gpu=target.gpu_name, compute_capability=target.compute_capability,
        tensorrt_version=target.tensorrt_version, mode=mode, tf32=precision != "fp32",
        batch={"min": bmin, "opt": bopt, "max": bmax}, workspace_gb=workspace_gb,
        build_seconds=round(seconds, 2), input=input_name,
        output=bundle.artifacts[src_key].get("output", "probabilities"),
        source=src_key, source_sha256=bundle.artifacts[src_key]["sha256"],
        timing_cache=cache_path.name,
        made_by={"tool": "tensorrt.Builder.build_serialized_network", "versions": tool_versions("tensorrt")},
    )
    return EngineBuild(precision=precision, key=key, file=dest.name, seconds=seconds, source=src_key, mode=mode)


# ------------------------------------------------------------------------- load
@dataclass
class LoadedEngine:
    """A deserialized engine with the objects that must outlive it (runtime, logger)."""

    engine: Any
    runtime: Any
    logger: Any
    entry: dict[str, Any]
    path: Path
    target: EngineTarget


def load_engine(bundle: Bundle, precision: str, device: int = 0) -> LoadedEngine:
    """Open the bundle's engine for ``precision`` after checking it was built for CUDA device
    ``device`` (the one the runtime selected) and this TensorRT version (and from the bundle's current
    ONNX); a stale one is refused with the rebuild command. Used by ``edgecat.runtime.tensorrt_runtime``."""
    trt = require_tensorrt()
    target = current_target(trt, device)
    entry = check_engine(bundle, precision, target)
    path = bundle.artifact_path(engine_key(precision))
    logger = _logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EdgecatError(f"TensorRT could not deserialize {path.name}; " + rebuild_hint(bundle.path, precision))
    return LoadedEngine(engine=engine, runtime=runtime, logger=logger, entry=entry, path=path, target=target)


def engine_parity(bundle: Bundle, precision: str, n: int = 16) -> dict[str, Any] | None:
    """Engine vs ONNX Runtime FP32 on the parity images, through the TensorRT runtime when it exists,
    fed in batches the engine's profile allows (max batch may be below ``n``)."""
    import numpy as np

    from edgecat.export.onnx import onnx_outputs, parity_images

    try:
        from edgecat.runtime import open_runtime

        batch, what = parity_images(bundle, n=n)
        ref = bundle.class_probs(onnx_outputs(bundle.artifact_path("onnx-fp32"), batch))
        with open_runtime(bundle, "tensorrt", precision) as rt:
            step = int(getattr(rt, "max_batch", len(batch)))
            got = np.concatenate([rt.infer(batch[i:i + step]) for i in range(0, len(batch), step)])
    except (ImportError, AttributeError, EdgecatError) as exc:
        log.warning("TensorRT parity check skipped: cannot run the engine here (%s)", exc)
        return None
    agree = float(np.mean(np.array(bundle.labels_from_probs(ref)) == np.array(bundle.labels_from_probs(got))))
    return {"reference": "onnx-fp32 (onnxruntime cpu)", "images": what,
            "max_abs_diff": float(np.max(np.abs(ref - got))), "label_agreement": agree}


def build_engines(bundle: Bundle, precisions: list[str], batch: tuple[int, int, int] = DEFAULT_BATCH,
                  workspace_gb: float = DEFAULT_WORKSPACE_GB) -> list[EngineBuild]:
    """Build every requested precision (checking TensorRT and the GPU once, before any work) and
    record each engine's parity against ONNX Runtime when the TensorRT runtime is available."""
    trt = require_tensorrt()
    current_target(trt)
    for p in precisions:
        engine_key(p)
    out = []
    for p in precisions:
        if p == "fp16" and not bundle.has("onnx-fp16"):
            from edgecat.export.fp16 import export_fp16

            log.info("FP16 engines are built strongly typed from model.fp16.onnx: making it first")
            export_fp16(bundle)
        built = build_engine(bundle, p, batch=batch, workspace_gb=workspace_gb, trt=trt)
        parity = engine_parity(bundle, p)
        if parity is not None:
            bundle.artifacts[built.key]["parity"] = parity
            bundle.save()
            log.info("TensorRT %s vs ONNX Runtime FP32: max prob diff %.3g, agreement %.1f%%",
                     p, parity["max_abs_diff"], 100 * parity["label_agreement"])
        out.append(built)
    return out
