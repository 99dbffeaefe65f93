"""Every ONNX Runtime session edgecat makes, made here: the runtimes' tuned sessions and the plain CPU
sessions the export steps and the precision table compare with."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError, MissingDependencyError, first_line
from edgecat.runtime.base import as_model_input, physical_cores

log = logging.getLogger(__name__)

#: images per ``session.run`` when a whole set is scored (bounds memory on a big labelled set)
RUN_BATCH = 64
#: the same for Q/DQ arithmetic, whose unfused Quantize/Dequantize/Clip ops each stream the whole
#: activation through memory: 8 images keep more of it in cache (MobileNetV2 224 px TensorRT flavour
#: on a 2-core Xeon, two runs: 36.4 and 33.5 ms per image against 43.2 and 34.6-38.3 at 64; outputs
#: identical)
SIMULATED_RUN_BATCH = 8


def import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime is not installed: pip install onnxruntime") from exc
    return ort


def session_options(threads: int | None = None, spinning: bool = True, stop_spinning: bool = False) -> Any:
    """CPU settings measured on a 2-core box (benchmarks/README.md): one thread per physical core,
    all graph optimisations, sequential execution, spinning worker threads (ORT's default). Without
    spinning, MobileNetV2 INT8 with 2 threads took 6.9 ms instead of 4.0 (each of ~100 ops wakes a
    sleeping worker); but when other processes saturate every core, spinning doubled latency (22 vs
    11 ms): ``spinning=False`` (``bench --no-spinning``) is for such shared machines.

    ``stop_spinning``: spin inside a run, stop when it returns (``session.force_spinning_stop``).
    Workers left spinning between runs take the cores from whatever the caller does between them:
    in a stream, decoding the next frame (MobileNetV2 224 FP32, 2 threads, 640x480 video on 2
    cores: 78-81 FPS against 67-69). Back-to-back runs lose up to 3% with it, so bench keeps ORT's
    default."""
    ort = import_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or physical_cores())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning and stop_spinning:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


def open_session(path: Path, options: Any = None, providers: Sequence[Any] = ("CPUExecutionProvider",)) -> Any:
    """An ``InferenceSession`` on ``path``; a file ORT cannot open is one EdgecatError line."""
    ort = import_ort()
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise EdgecatError(f"cannot open {path} with ONNX Runtime: {first_line(exc)[:200]}") from exc


def cpu_session(path: Path, simulate_qdq: bool = False) -> Any:
    """A plain ONNX Runtime CPU session. ``simulate_qdq`` turns graph fusion off so a Q/DQ model runs as
    quantize -> dequantize -> float op, i.e. the arithmetic TensorRT performs (int32 accumulation
    has no overflow). ORT's fused x86 int8 kernels are not that: without VNNI they multiply through
    AVX2 ``vpmaddubsw``, whose int16 pair sums saturate on full-range symmetric int8 (the TensorRT
    flavour), which cost 20% label agreement on the cats-vs-dogs model and says nothing about how
    the model does on TensorRT."""
    ort = import_ort()
    so = ort.SessionOptions()
    if simulate_qdq:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return open_session(path, so)


def run_session(sess: Any, batch: np.ndarray, chunk: int = RUN_BATCH) -> np.ndarray:
    """The first output of ``sess`` on ``batch``, fed in the input's dtype, ``chunk`` images at a time."""
    inp = sess.get_inputs()[0]
    uint8 = inp.type == "tensor(uint8)"
    outs = [sess.run(None, {inp.name: as_model_input(batch[i:i + chunk], uint8)})[0]
            for i in range(0, len(batch), chunk)]
    return np.concatenate(outs, axis=0)


def onnx_outputs(path: Path, batch: np.ndarray, simulate_qdq: bool = False) -> np.ndarray:
    """Raw outputs of the ONNX file ``path`` on ``batch`` through a plain CPU session."""
    return run_session(cpu_session(path, simulate_qdq), batch, SIMULATED_RUN_BATCH if simulate_qdq else RUN_BATCH)


__all__ = ["cpu_session", "import_ort", "onnx_outputs", "open_session", "run_session", "session_options"]
