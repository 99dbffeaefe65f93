"""OpenVINO: reads the bundle's ONNX FP32 / FP16 / INT8 (Q/DQ) files directly, no conversion step.

On x86 CPUs OpenVINO runs the Q/DQ INT8 graph with its own int8 kernels, which measured faster than
ONNX Runtime on the same file (benchmarks/README.md); Intel GPUs/NPUs are reached with ``device``.

The bundle's graphs keep a dynamic batch dimension, and OpenVINO's CPU plugin is slower on a dynamic
shape than on a static one (it picks kernels and memory per shape at run time). So the graph is
reshaped to the static batch each call actually has and compiled for it, one compiled model per batch
size seen (at most :data:`MAX_COMPILED`; the least recently used is dropped beyond that): predict and
stream run batch 1, bench and evaluate their own batch, each at static-shape speed after one compile.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.errors import EdgecatError, first_line
from edgecat.runtime.base import Runtime, as_model_input
from edgecat.runtime.openvino.loader import compile_config, import_openvino
from edgecat.runtime.signal_stack import keep_signal_stack

log = logging.getLogger(__name__)

#: compiled models kept, one per batch size (each holds its own weights copy for the CPU plugin)
MAX_COMPILED = 4


class OpenVINORuntime(Runtime):
    """Options: ``threads`` (default: physical cores), ``hint`` (latency | throughput), ``device`` (CPU),
    ``static`` (default True: compile per static batch size; False compiles the file's dynamic shape once)."""

    backend = "openvino"

    def _load(self) -> None:
        # OpenVINO swaps the thread's alternate signal stack when its CPU plugin loads and puts it
        # back when the Core goes: see edgecat.runtime.signal_stack
        with keep_signal_stack():
            self._open()

    def _open(self) -> None:
        ov = import_openvino()
        self.artifact_key = artifacts.onnx(self.precision).key
        self.path = self.bundle.artifact_path(self.artifact_key)
        self.device = str(self.options.get("device") or "CPU")
        self.core = ov.Core()
        if self.device.split(":")[0].split(".")[0] not in {d.split(".")[0] for d in self.core.available_devices}:
            raise EdgecatError(f"openvino: no {self.device} device here "
                               f"(available: {', '.join(self.core.available_devices)})")
        self.config = compile_config(str(self.options.get("hint") or "latency"), self.options.get("threads"),
                                     self.device, self.precision)
        self.static = bool(self.options.get("static", True))
        self._compiled: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        try:
            self.model = self.core.read_model(str(self.path))
            shape = self.model.inputs[0].get_partial_shape()
            # a file whose batch is already fixed is compiled once, as it is
            self.static = self.static and shape.rank.is_static and shape[0].is_dynamic
            first = self._compile(1 if self.static else 0)
        except EdgecatError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types for a bad file
            raise EdgecatError(f"cannot open {self.path} with OpenVINO: {first_line(exc)[:200]}") from exc
        compiled = first[0]
        self.uint8 = compiled.inputs[0].get_element_type().get_type_name() == "u8"
        names = [set(o.get_names()) for o in compiled.outputs]
        self.output_index = next((i for i, n in enumerate(names) if "probabilities" in n), 0)
        log.debug("openvino %s on %s with %s (static batch: %s)", self.path.name, self.device, self.config,
                  self.static)

    def _compile(self, batch: int) -> tuple[Any, Any]:
        """(compiled model, infer request) for ``batch`` (0: the file's own shape)."""
        if batch in self._compiled:
            self._compiled.move_to_end(batch)
            return self._compiled[batch]
        model = self.model
        if batch:
            shape = self.model.inputs[0].get_partial_shape()
            static = [batch, *(shape[i].get_length() for i in range(1, shape.rank.get_length()))]
            model = self.model.clone()
            model.reshape({model.inputs[0]: static})
        with keep_signal_stack():
            compiled = self.core.compile_model(model, self.device, self.config)
            entry = (compiled, compiled.create_infer_request())
        self._compiled[batch] = entry
        while len(self._compiled) > MAX_COMPILED:
            with keep_signal_stack():
                dropped, _ = self._compiled.popitem(last=False)
            log.debug("openvino: dropped the batch-%d compile", dropped)
        return entry

    @property
    def compiled_batches(self) -> list[int]:
        """Batch sizes compiled so far (0: the file's dynamic shape); tests and bench read it."""
        return list(self._compiled)

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        return as_model_input(batch, uint8=self.uint8)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            compiled, request = self._compile(batch.shape[0] if self.static else 0)
        except Exception as exc:  # noqa: BLE001 - a compile for a new batch size can fail like a load
            raise EdgecatError(f"OpenVINO cannot compile {self.path.name} for batch {batch.shape[0]}: "
                               f"{first_line(exc)[:200]}") from exc
        # share_inputs avoids a copy of the batch; the output is copied because the request reuses it
        result = request.infer({0: batch}, share_inputs=True)
        return np.array(result[compiled.outputs[self.output_index]], copy=True)

    def close(self) -> None:
        with keep_signal_stack():
            self._compiled.clear()
            self.model = None
            self.core = None
        super().close()
