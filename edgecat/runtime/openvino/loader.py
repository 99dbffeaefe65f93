"""Opening the bundle's ONNX files with OpenVINO: the import and the compile settings."""

from __future__ import annotations

from typing import Any

from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.runtime.base import physical_cores

HINTS = ("latency", "throughput")


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError("openvino is not installed: pip install 'edgecat[openvino]'") from exc
    return openvino


def compile_config(hint: str = "latency", threads: int | None = None, device: str = "CPU",
                   precision: str = "fp32") -> dict[str, Any]:
    """LATENCY (one request, all cores on it) for predict/stream; THROUGHPUT (parallel streams) for
    batch work. Threads default to physical cores like the other runtimes. For ``fp32`` the CPU's
    inference precision is pinned to f32: OpenVINO would otherwise run FP32 graphs in bf16 on
    AVX512-BF16/AMX CPUs and an 'fp32' figure would not be FP32. FP16 and INT8 keep OpenVINO's
    choice (bf16 where the CPU has it, else f32): 1.6-2x faster there, and their labels are checked
    against FP32 by the precision table and ``--backend auto``."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    if hint not in HINTS:
        raise EdgecatError(f"unknown OpenVINO hint '{hint}' (choose from: {', '.join(HINTS)})")
    mode = hints.PerformanceMode.LATENCY if hint == "latency" else hints.PerformanceMode.THROUGHPUT
    cfg: dict[str, Any] = {hints.performance_mode: mode}
    if device.upper().startswith("CPU"):
        cfg[props.inference_num_threads] = int(threads or physical_cores())
        if precision == "fp32":
            cfg[hints.inference_precision] = "f32"
    return cfg


__all__ = ["HINTS", "compile_config", "import_openvino"]
