"""Keras -> ONNX FP32 with a parity check against Keras (needs the training extra).

The graph has exactly one input, ``image`` (NHWC float32 raw RGB 0-255, dynamic batch), and one
output, ``probabilities``. After conversion the same images go through Keras and ONNX Runtime; if
they differ by more than the tolerance the export fails and no file is left behind, as Optimum's
exporters do.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, require_tensorflow
from edgecat.fsutil import atomic_path
from edgecat.splits import parity_images
from edgecat.runtime.onnxruntime.loader import onnx_outputs
from edgecat.validate import validate

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
FP32_TOLERANCE = 1e-4
DEFAULT_OPSET = artifacts.EXPORT.opset


def _captured_constants(fn: Any, spec: Any) -> dict[str, np.ndarray]:
    """Eager tensors the traced model closes over, by their name inside the graph.

    Keras' Normalization layer (EfficientNet's stem) keeps its mean and variance as plain tensors,
    not variables; tf2onnx freezes variables but lists such captures as extra graph inputs.
    """
    import tensorflow as tf

    concrete = fn.get_concrete_function(*spec)
    return {inner.name: outer.numpy()
            for outer, inner in zip(concrete.captured_inputs, concrete.graph.internal_captures)
            if outer.dtype != tf.resource}


def _fold_constants(model: Any, constants: dict[str, np.ndarray]) -> None:
    """Graph inputs that are captured constants: dropped where TensorFlow's freezing already folded
    them (the usual case), initializers where a node still reads them. One input remains, ``image``."""
    from onnx import numpy_helper

    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    for inp in [i for i in graph.input if i.name in constants]:
        if inp.name in used:
            graph.initializer.append(numpy_helper.from_array(np.asarray(constants[inp.name]), inp.name))
        graph.input.remove(inp)


@contextlib.contextmanager
def _scalar_safe_transpose_pass() -> Iterator[None]:
    """tf2onnx 1.17's transpose pass crashes on Conv -> Add(scalar) (MobileNetV3's hard-swish
    ``x + 3``), and tf2onnx then skips the whole pass: ~100 NHWC<->NCHW Transposes stay in the
    graph, slowing every runtime. A scalar is no Conv bias, so such an Add is handled like any
    other elementwise op. Swapped in for one conversion only; other tf2onnx versions untouched."""
    try:
        from tf2onnx import optimizer
        from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer
    except ImportError:
        yield
        return
    registry = getattr(optimizer, "_optimizers", None)
    if not isinstance(registry, dict) or registry.get("optimize_transpose") is not TransposeOptimizer:
        yield
        return

    class ScalarSafeTransposeOptimizer(TransposeOptimizer):  # type: ignore[misc, valid-type]
        def _add_handler(self, trans: Any, node: Any) -> Any:
            producer = trans.inputs[0]
            if (node.inputs[1].is_const() and producer.type in ("Conv", "ConvTranspose")
                    and node.inputs[1].get_tensor_value(as_list=False).ndim == 0):
                return self._handle_node_having_branches(trans, node)
            return super()._add_handler(trans, node)

    registry["optimize_transpose"] = ScalarSafeTransposeOptimizer
    try:
        yield
    finally:
        registry["optimize_transpose"] = TransposeOptimizer


def _rename_io(model: Any) -> Any:
    """tf2onnx names tensors after TF ops; give the graph stable, documented names."""
    graph = model.graph
    if len(graph.input) != 1:
        names = [i.name for i in graph.input]
        raise EdgecatError(f"exported graph has {len(names)} inputs ({names}); expected only '{INPUT_NAME}'")
    old_out = graph.output[0].name
    if old_out != OUTPUT_NAME:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if o == old_out else o for o in node.output]
            node.input[:] = [OUTPUT_NAME if i == old_out else i for i in node.input]
        graph.output[0].name = OUTPUT_NAME
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def keras_to_onnx(model: Any, dest: Path, opset: int = DEFAULT_OPSET) -> Any:
    """Convert a Keras model to ONNX at ``dest`` (written atomically); returns the ONNX model."""
    require_tensorflow()
    import onnx
    import tensorflow as tf
    import tf2onnx

    h, w, c = model.input_shape[1:]
    spec = (tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME),)
    fn = tf.function(lambda x: model(x, training=False))
    with _scalar_safe_transpose_pass():
        onnx_model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    _fold_constants(onnx_model, _captured_constants(fn, spec))
    onnx_model = _rename_io(onnx_model)
    onnx_model.producer_name = "edgecat"
    onnx.checker.check_model(onnx_model)
    with atomic_path(dest) as tmp:
        onnx.save(onnx_model, str(tmp))
    return onnx_model


def export_onnx(bundle: Bundle, opset: int = DEFAULT_OPSET, parity_dirs: list[str] | None = None,
                tolerance: float = FP32_TOLERANCE) -> dict[str, Any]:
    """Add ``model.onnx`` (FP32) to the bundle after checking it against Keras."""
    from edgecat.runtime.keras.loader import load_keras_model

    kind = artifacts.onnx("fp32")
    model = load_keras_model(bundle.artifact_path("keras"))
    dest = bundle.path / kind.file
    staging = dest.with_name(f".{dest.stem}.staging{dest.suffix}")
    t0 = time.perf_counter()
    try:
        keras_to_onnx(model, staging, opset=opset)
        seconds = time.perf_counter() - t0
        batch, what = parity_images(bundle, extra_dirs=parity_dirs)
        report = validate(np.asarray(model(batch, training=False)), onnx_outputs(staging, batch), what, tolerance,
                          bundle=bundle, reference_name="keras", space="raw", name=kind.file)
        report.raise_if_failed("ONNX export", "Keras", f"no {kind.file} written")
        staging.replace(dest)
    finally:
        staging.unlink(missing_ok=True)
    entry = bundle.add_artifact(
        kind.key,
        dest,
        format=kind.format,
        precision=kind.precision,
        opset=opset,
        input=INPUT_NAME,
        output=OUTPUT_NAME,
        made_by={"tool": "tf2onnx.convert.from_function", "from": kind.made_from,
                 "from_sha256": bundle.artifacts.get(str(kind.made_from), {}).get("sha256"),
                 "seconds": round(seconds, 2),
                 "versions": tool_versions("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")},
        parity=report.parity(),
    )
    return entry
