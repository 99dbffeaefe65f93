"""OpenVINO: reads the bundle's ONNX FP32 / FP16 / INT8 (Q/DQ) files directly, no conversion step.

On x86 CPUs OpenVINO runs the Q/DQ INT8 graph with its own int8 kernels, which measured faster than
ONNX Runtime on the same file (benchmarks/README.md); Intel GPUs/NPUs are reached with ``device``.
"""

from __future__ import annotations

import logging

import numpy as np

from edgecat import artifacts
from edgecat.errors import EdgecatError, first_line
from edgecat.runtime.base import Runtime, as_model_input
from edgecat.runtime.openvino.loader import compile_config, import_openvino

log = logging.getLogger(__name__)


class OpenVINORuntime(Runtime):
    """Options: ``threads`` (default: physical cores), ``hint`` (latency | throughput), ``device`` (CPU)."""

    backend = "openvino"

    def _load(self) -> None:
        ov = import_openvino()
        self.artifact_key = artifacts.onnx(self.precision).key
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
        except Exception as exc:  # OpenVINO raises its own types for a bad file
            raise EdgecatError(f"cannot open {path} with OpenVINO: {first_line(exc)[:200]}") from exc
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
