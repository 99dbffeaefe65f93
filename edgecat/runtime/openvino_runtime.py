"""OpenVINO: reads the bundle's ONNX FP32 / FP16 / INT8 (Q/DQ) files directly, no conversion step.

On x86 CPUs OpenVINO runs the Q/DQ INT8 graph with its own int8 kernels, which measured faster than
ONNX Runtime on the same file (benchmarks/README.md); Intel GPUs/NPUs are reached with ``device``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.runtime.base import Runtime, as_model_input, physical_cores

log = logging.getLogger(__name__)

ARTIFACT = {"fp32": "onnx-fp32", "fp16": "onnx-fp16", "int8": "onnx-int8"}
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


class OpenVINORuntime(Runtime):
    """Options: ``threads`` (default: physical cores), ``hint`` (latency | throughput), ``device`` (CPU)."""

    backend = "openvino"

    def _load(self) -> None:
        ov = import_openvino()
        self.artifact_key = ARTIFACT[self.precision]
        path = self.bundle.artifact_path(self.artifact_key)
        device = str(self.options.get("device") or "CPU")
        core = ov.Core()
        if device.split(":")[0].split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise EdgecatError(f"openvino: no {device} device here (available: {', '.join(core.available_devices)})")
        config = compile_config(str(self.options.get("hint") or "latency"), self.options.get("threads"), device,
                                self.precision)
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise EdgecatError(f"cannot open {path} with OpenVINO: {str(exc).splitlines()[0][:200]}") from exc
        self.request = self.compiled.create_infer_request()
        inputs = self.compiled.inputs
        self.uint8 = inputs[0].get_element_type().get_type_name() == "u8"
        outputs = self.compiled.outputs
        names = [set(o.get_names()) for o in outputs]
        self.output_index = next((i for i, n in enumerate(names) if "probabilities" in n), 0)
        log.debug("openvino %s on %s with %s", path.name, device, config)

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        return as_model_input(batch, uint8=self.uint8)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # share_inputs avoids a copy of the batch; the output is copied because the request reuses it
        result = self.request.infer({0: batch}, share_inputs=True)
        return np.array(result[self.compiled.outputs[self.output_index]], copy=True)

    def close(self) -> None:
        self.request = None
        self.compiled = None
        super().close()
