"""Opening a TensorRT engine: what an engine is tied to (GPU, compute capability, TensorRT version),
its file name, the stale-engine check and deserialisation. The engine build (edgecat.export.tensorrt)
names and records engines through these, so the writer and the reader cannot drift apart."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecat import artifacts
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.runtime.cuda import current_gpu, require_tensorrt

#: TensorRT Python names (``Class`` or ``Class.member``) that edgecat's TensorRT code may reach only behind
#: a ``getattr``/``hasattr`` guard, because a supported release lacks them -> the releases that have them.
#: Every other name it uses exists in TensorRT 10.3 (JetPack 6.1/6.2) and the newest 11.x alike:
#: tests/test_trt_bindings.py reads both releases' compiled bindings and fails on a name one lacks
#: (``BuilderFlag.FP16``, for instance, is gone in 11). Empty: no such name is used today.
VERSION_GUARDED: dict[str, str] = {}

#: batch sizes (min, opt, max) of the optimization profile engines are built with: native engines and
#: the engines ONNX Runtime's TensorRT provider builds alike
DEFAULT_BATCH = (1, 8, 32)

#: the ONNX artifact each engine precision is built from (the registry's ``made_from``)
SOURCE: dict[str, str] = {p: str(artifacts.find("engine", p).made_from) for p in artifacts.PRECISIONS}


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


def parse_batch(value: str | tuple[int, ...] | None) -> tuple[int, int, int]:
    """'1,8,32' -> (1, 8, 32), checking 1 <= min <= opt <= max; one number N means (1, N, N)."""
    if value is None:
        return DEFAULT_BATCH
    try:
        parts = [int(p) for p in value.split(",")] if isinstance(value, str) else [int(p) for p in value]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise EdgecatError(f"--batch wants MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX (got {value})")
    return parts[0], parts[1], parts[2]


def engine_key(precision: str) -> str:
    """Manifest key of the engine for ``precision`` (``trt-fp16`` ...)."""
    if precision not in artifacts.PRECISIONS:
        raise EdgecatError(f"unknown TensorRT precision '{precision}' "
                           f"(choose from: {', '.join(artifacts.PRECISIONS)})")
    return artifacts.find("engine", precision).key


def engine_filename(target: EngineTarget, precision: str) -> str:
    """``model.<gpu-slug>-sm<cc>-trt<ver>.<prec>.engine``, e.g. ``model.orin-sm87-trt10.3.0.fp16.engine``."""
    engine_key(precision)
    return artifacts.engine_file(precision, target.slug)


def rebuild_hint(bundle_path: str | Path, precision: str) -> str:
    return f"rebuild it here with: {artifacts.export_command(bundle_path, engine_key(precision))}"


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


def current_target(trt: Any = None, device: int = 0) -> EngineTarget:
    """The GPU ``device`` (the one the runtime selects) and the TensorRT version of this machine."""
    trt = trt or require_tensorrt()
    name, cc = current_gpu(device)
    return EngineTarget(gpu_name=name, compute_capability=cc, tensorrt_version=str(trt.__version__))


def trt_logger(trt: Any) -> Any:
    return trt.Logger(trt.Logger.WARNING)


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
    ONNX); a stale one is refused with the rebuild command."""
    trt = require_tensorrt()
    target = current_target(trt, device)
    entry = check_engine(bundle, precision, target)
    path = bundle.artifact_path(engine_key(precision))
    logger = trt_logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EdgecatError(f"TensorRT could not deserialize {path.name}; " + rebuild_hint(bundle.path, precision))
    return LoadedEngine(engine=engine, runtime=runtime, logger=logger, entry=entry, path=path, target=target)


__all__ = ["DEFAULT_BATCH", "SOURCE", "VERSION_GUARDED", "EngineTarget", "LoadedEngine", "check_engine",
           "current_target", "engine_filename", "engine_key", "engine_problem", "gpu_slug", "load_engine", "parse_batch",
           "rebuild_hint", "trt_logger"]
