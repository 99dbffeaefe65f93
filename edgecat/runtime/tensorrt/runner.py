"""Native TensorRT (10 and 11): the bundle's engine, pinned host buffers, one CUDA stream and an
optional CUDA graph.

CUDA graphs follow trtexec and Torch-TensorRT: one graph per execution context, captured for the
current input shape and thrown away when the shape changes (the context's kernels and output copy
sizes depend on it), then re-captured after one plain enqueue. A capture that fails logs the CUDA or
TensorRT error and the runtime falls back to plain enqueues.

Written against the documented name-based I/O API (``num_io_tensors``, ``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) that TensorRT 10 introduced and 11
keeps, and CUDA through cuda-python (``cuda.bindings.runtime``, formerly ``cuda.cudart``), as NVIDIA's
TensorRT samples do. Engine loading and the stale-engine check are :mod:`edgecat.runtime.tensorrt.loader`.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime
from edgecat.runtime.cuda import (
    cuda_check,
    cuda_device_count,
    device_memory_used,
    import_cudart,
    require_tensorrt,
)
from edgecat.runtime.tensorrt.loader import engine_key, load_engine

log = logging.getLogger(__name__)


@dataclass
class _Buffer:
    """One I/O tensor: a pinned host array and its device twin, sized for the profile's max batch."""

    name: str
    dtype: np.dtype
    host_ptr: int
    device_ptr: int
    capacity: int  # elements
    host: np.ndarray


class TensorRTRuntime(Runtime):
    """Options: ``cuda_graph`` (bool, default True: capture a graph for the current batch size and
    replay it until the size changes), ``device`` (CUDA device ordinal, default 0; the engine is
    checked against that device)."""

    backend = "tensorrt"

    def _load(self) -> None:
        trt = require_tensorrt()
        self._trt = trt
        self._cudart = cudart = import_cudart()
        # "no GPU" only for cudaErrorNoDevice; a driver older than cuda-python's runtime is named as such
        count = cuda_device_count(cudart, "the tensorrt backend")
        self.device = int(self.options.get("device", 0))
        if not 0 <= self.device < count:
            raise EdgecatError(f"the tensorrt backend was asked for GPU {self.device}; {count} visible here")
        cuda_check(cudart.cudaSetDevice(self.device), cudart)
        self.artifact_key = engine_key(self.precision)
        self._loaded = load_engine(self.bundle, self.precision, device=self.device)
        engine = self._loaded.engine
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EdgecatError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda_check(cudart.cudaStreamCreate(), cudart)
        self.use_graph = bool(self.options.get("cuda_graph", True))
        self._graph: Any = None  # the one captured graph (for _shape_batch), None when not captured
        self.graph_captures = 0
        self._shape_batch: int | None = None
        self.inputs: list[_Buffer] = []
        self.outputs: list[_Buffer] = []
        try:
            self._bind(trt, engine)
        except BaseException:
            self.close()  # the stream and any pinned/device buffers already made
            raise

    def _bind(self, trt: Any, engine: Any) -> None:
        """Pinned host + device buffers for every I/O tensor at the profile's max batch."""
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        first_input = next((n for n in names if is_input[n]), None)
        if first_input is None:
            raise EdgecatError(f"{self._loaded.path.name} has no input tensor")
        # (min, opt, max) shapes of optimization profile 0 bound the batch this engine accepts
        self.max_batch = int(engine.get_tensor_profile_shape(first_input, 0)[2][0])
        for name in names:
            shape = [self.max_batch if d < 0 else int(d) for d in engine.get_tensor_shape(name)]
            if is_input[name]:
                shape[0] = self.max_batch
            buf = self._alloc(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))), int(np.prod(shape)))
            (self.inputs if is_input[name] else self.outputs).append(buf)
            self.context.set_tensor_address(name, buf.device_ptr)
        if len(self.inputs) != 1 or not self.outputs:
            raise EdgecatError(f"{self._loaded.path.name}: expected one image input, got {len(self.inputs)}")
        self.input_name = self.inputs[0].name
        self._out_index = next(
            (i for i, b in enumerate(self.outputs) if b.name == "probabilities"), 0
        )

    def _alloc(self, name: str, dtype: np.dtype, elements: int) -> _Buffer:
        cudart = self._cudart
        nbytes = elements * dtype.itemsize
        host_ptr = int(cuda_check(cudart.cudaMallocHost(nbytes), cudart))
        try:
            device_ptr = int(cuda_check(cudart.cudaMalloc(nbytes), cudart))
        except EdgecatError:
            cudart.cudaFreeHost(host_ptr)
            raise
        raw = (ctypes.c_byte * nbytes).from_address(host_ptr)
        host = np.frombuffer(raw, dtype=dtype, count=elements)
        return _Buffer(name, dtype, host_ptr, device_ptr, elements, host)

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        return np.ascontiguousarray(batch.astype(self.inputs[0].dtype, copy=False))

    def _set_batch(self, n: int, shape: tuple[int, ...]) -> bool:
        """Set the context's input shape; True when it changed (the captured graph is then stale)."""
        if n > self.max_batch:
            raise EdgecatError(
                f"batch {n} exceeds the engine's maximum {self.max_batch}; rebuild with "
                f"`edgecat export {self.bundle.path} --trt --batch 1,{n},{n}`"
            )
        if self._shape_batch == n:
            return False
        if not self.context.set_input_shape(self.input_name, shape):
            raise EdgecatError(f"TensorRT refused input shape {shape}")
        self._shape_batch = n
        return True

    def _enqueue(self, n: int) -> None:
        """Copy in, run, copy out on the one stream (what a CUDA graph captures)."""
        cudart = self._cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        inp = self.inputs[0]
        per_image = inp.capacity // self.max_batch
        cuda_check(cudart.cudaMemcpyAsync(inp.device_ptr, inp.host_ptr, n * per_image * inp.dtype.itemsize,
                                          kind_h2d, self.stream), cudart)
        if not self.context.execute_async_v3(int(self.stream)):
            raise EdgecatError("TensorRT execute_async_v3 failed")
        for out in self.outputs:
            nbytes = int(np.prod(self.context.get_tensor_shape(out.name))) * out.dtype.itemsize
            cuda_check(cudart.cudaMemcpyAsync(out.host_ptr, out.device_ptr, nbytes, kind_d2h, self.stream),
                       cudart)

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self._cudart.cudaGraphExecDestroy(self._graph)
            self._graph = None

    def _capture(self, n: int) -> Any:
        """Capture the enqueue for the current shape. TensorRT wants one plain enqueue after a shape
        change first (it finishes lazy set-up outside the graph). On failure: the error is logged,
        the stream leaves capture mode, and None is returned so the caller enqueues normally."""
        cudart = self._cudart
        self._enqueue(n)
        cuda_check(cudart.cudaStreamSynchronize(self.stream), cudart)
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        graph = None
        try:
            cuda_check(cudart.cudaStreamBeginCapture(self.stream, mode), cudart)
            try:
                self._enqueue(n)
            finally:
                # always leave capture mode; an invalidated capture reports its own error here,
                # which must not replace the one that invalidated it
                err, graph = cudart.cudaStreamEndCapture(self.stream)
                if getattr(err, "value", err) != 0:
                    graph = None
            if graph is None:
                raise EdgecatError("CUDA stream capture was invalidated")
            graph_exec = cuda_check(cudart.cudaGraphInstantiate(graph, 0), cudart)
        except (EdgecatError, RuntimeError) as exc:
            log.warning("CUDA graph capture failed at batch %d (%s); running without CUDA graphs", n, exc)
            self.use_graph = False
            cudart.cudaGetLastError()  # clear a non-sticky error left by the failed capture
            return None
        finally:
            if graph is not None:
                cudart.cudaGraphDestroy(graph)
        self.graph_captures += 1
        return graph_exec

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        inp = self.inputs[0]
        if self._set_batch(n, tuple(batch.shape)):
            self._drop_graph()
        inp.host[: batch.size] = batch.reshape(-1)
        if self.use_graph and self._graph is None:
            self._graph = self._capture(n)
        if self._graph is not None:
            cuda_check(self._cudart.cudaGraphLaunch(self._graph, self.stream), self._cudart)
        else:
            self._enqueue(n)
        cuda_check(self._cudart.cudaStreamSynchronize(self.stream), self._cudart)
        out = self.outputs[self._out_index]
        shape = tuple(self.context.get_tensor_shape(out.name))
        return out.host[: int(np.prod(shape))].reshape(shape).astype(np.float32)

    def gpu_memory_bytes(self) -> int | None:
        return device_memory_used(self._cudart)

    def close(self) -> None:
        if self._closed or not hasattr(self, "stream"):
            super().close()
            return
        cudart = self._cudart
        self._drop_graph()
        for buf in self.inputs + self.outputs:
            cudart.cudaFreeHost(buf.host_ptr)
            cudart.cudaFree(buf.device_ptr)
        cudart.cudaStreamDestroy(self.stream)
        self.context = None
        self.engine = None
        super().close()
