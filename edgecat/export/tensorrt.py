"""TensorRT engines built on the machine that will run them (TensorRT 10 and 11), no TensorFlow.

Engines are not portable across GPUs or TensorRT versions, so each engine file is named by GPU
(name + compute capability), TensorRT version and precision, and its manifest entry records them;
:func:`edgecat.runtime.tensorrt.loader.load_engine` refuses a stale engine with the command that rebuilds it.

Precision comes from the ONNX graph, never from builder flags: every network is created strongly
typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: required on TensorRT 10, accepted and ignored
on 11 where strong typing is always on), FP16 is built from ``onnx-fp16``, INT8 from the symmetric
Q/DQ model ``onnx-int8-trt`` (checked against :mod:`edgecat.export.trt_rules` first), FP32 from
``onnx-fp32`` with TF32 cleared (TensorRT enables TF32 by default; the ONNX Runtime CUDA backend turns
it off too). So an "int8" engine is the same network on TensorRT 10 and 11: no precision flags
(removed in 11), no implicit calibrator (deprecated in 10.1, removed in 11).

Opening engines (naming, the stale-engine check, deserialisation) is :mod:`edgecat.runtime.tensorrt.loader`;
this module builds them and records them under the same names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError
from edgecat.fsutil import atomic_path
from edgecat.runtime.cuda import current_gpu, require_tensorrt
from edgecat.runtime.tensorrt.loader import (
    DEFAULT_BATCH,
    SOURCE,
    EngineTarget,
    check_engine,
    current_target,
    engine_filename,
    engine_key,
    engine_problem,
    parse_batch,
    trt_logger,
)
from edgecat.validate import validate

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_GB = artifacts.EXPORT.workspace_gb


# ------------------------------------------------------------------------- build
@dataclass
class EngineBuild:
    precision: str
    key: str
    file: str
    seconds: float
    source: str
    mode: str


def _source_for(bundle: Bundle, precision: str) -> str:
    key = SOURCE[precision]
    if not bundle.has(key):
        how = artifacts.export_command(bundle.path, key)
        raise EdgecatError(f"a TensorRT {precision} engine is built from {key}, which the bundle lacks: run `{how}` first")
    if precision == "int8":
        # a file made by an older edgecat (int32 biases) would fail in TensorRT's parser: say so here
        from edgecat.export.trt_rules import require_tensorrt_onnx

        try:
            require_tensorrt_onnx(bundle.artifact_path(key))
        except EdgecatError as exc:
            raise EdgecatError(f"{exc}; re-make it with `{artifacts.export_command(bundle.path, key)}`") from exc
    return key


def network_flags(trt: Any) -> int:
    """STRONGLY_TYPED: precision from the ONNX graph on TensorRT 10 (explicit quantization wants it),
    and the only mode on 11, which accepts the flag and ignores it. The bit is read from the enum:
    1 on TensorRT 10 (after EXPLICIT_BATCH), 0 on 11 (EXPLICIT_BATCH is gone). A TensorRT without it
    (8.x) would build an implicit-batch network and FP16/INT8 engines without their precision, so it
    is refused (:func:`edgecat.runtime.cuda.require_tensorrt` refuses it earlier by version)."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if flag is None:
        from edgecat.runtime.cuda import tensorrt_version_problem

        version = str(getattr(trt, "__version__", "?"))
        raise EdgecatError(tensorrt_version_problem(version) or
                           f"TensorRT {version} has no strongly typed networks (NetworkDefinitionCreationFlag."
                           "STRONGLY_TYPED): edgecat builds engines with TensorRT 10.x or 11.x")
    return 1 << int(flag)


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

    logger = trt_logger(trt)
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


def engine_parity(bundle: Bundle, precision: str, n: int = 16) -> dict[str, Any] | None:
    """Engine vs ONNX Runtime FP32 on the parity images, through the TensorRT runtime when it exists,
    fed in batches the engine's profile allows (max batch may be below ``n``). None when the engine
    cannot run here; a ParityError when its outputs are broken (non-finite, another shape)."""
    from edgecat.export.onnx import onnx_outputs
    from edgecat.runtime import open_runtime
    from edgecat.runtime.base import run_chunked
    from edgecat.splits import parity_images

    reference = artifacts.onnx("fp32").key
    try:
        batch, what = parity_images(bundle, n=n)
        ref = onnx_outputs(bundle.artifact_path(reference), batch)
        with open_runtime(bundle, "tensorrt", precision) as rt:
            got = run_chunked(rt, batch, int(getattr(rt, "max_batch", len(batch))), raw=True)
    except (ImportError, AttributeError, EdgecatError) as exc:
        log.warning("TensorRT parity check skipped: cannot run the engine here (%s)", exc)
        return None
    report = validate(ref, got, what, bundle=bundle, reference_name=f"{reference} (onnxruntime cpu)")
    return report.raise_if_failed(f"TensorRT {precision} engine", reference).parity()


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
        if p == "fp16" and not bundle.has(SOURCE[p]):
            from edgecat.export.fp16 import export_fp16

            log.info("FP16 engines are built strongly typed from %s: making it first", artifacts.file_of(SOURCE[p]))
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


__all__ = ["DEFAULT_BATCH", "DEFAULT_WORKSPACE_GB", "SOURCE", "EngineBuild", "EngineTarget", "build_engine",
           "build_engines", "check_engine", "configure", "current_gpu", "current_target", "engine_filename",
           "engine_key", "engine_parity", "engine_problem", "network_flags", "parse_batch", "require_tensorrt"]
