"""The TensorRT INT8 flavour's graph work after ONNX Runtime's quantizer: which nodes stay in high
precision, Q/DQ kept only where TensorRT's explicit-quantization rules place it, and the unquantized
layers in FP16 inside the file (see :mod:`edgecat.export.quantize` for the flavour and
:mod:`edgecat.export.trt_rules` for the rules the result is checked against)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgecat import artifacts

log = logging.getLogger(__name__)

#: opset of the TensorRT flavour with FP16 layers (QuantizeLinear/DequantizeLinear take FP16 from 19)
HIGH_PRECISION_OPSET = 19
#: the file the TensorRT flavour is written to (named in log lines)
TRT_FILE = next(k.file for k in artifacts.ARTIFACTS.values() if k.format == "onnx" and k.flavour == "trt")

def preprocessing_nodes(model_path: Path) -> list[str]:
    """Names of the nodes before the first Conv (graph nodes are topologically sorted)."""
    import onnx

    names = []
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


def trt_excluded_nodes(model_path: Path) -> list[str]:
    """Nodes the TensorRT flavour leaves in high precision: the in-graph preprocessing (x/127.5-1,
    Caffe mean: symmetric int8 on raw 0-255 pixels would leave 7 bits per pixel) and GEMV heads
    (a MatMul/Gemm with one output column cannot use tensor cores, so Model Optimizer leaves it
    unquantized: modelopt.onnx.quantization.int8, enable_gemv_detection_for_trt)."""
    import onnx

    from edgecat.export.trt_rules import Graph

    gr = Graph(onnx.load(str(model_path), load_external_data=False))
    names = preprocessing_nodes(model_path)
    for node in gr.g.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and gr.is_const(node.input[1]):
            w = gr.const(node.input[1])
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            if w is not None and w.ndim == 2 and w.shape[0 if trans_b else 1] == 1:
                names.append(node.name)
    return names


def trt_post_pass(path: Path) -> dict[str, int]:
    """Keep only the residual input of each Add quantized (the other one fuses into its Conv, Model
    Optimizer's remove_partial_input_qdq), drop the Q/DQ nodes left without consumers and the opset
    imports ORT's pre-processing added but no node uses. Returns node counts of the result."""
    import onnx

    from edgecat.export.trt_rules import Graph

    model = onnx.load(str(path))
    gr = Graph(model)
    for add in [n for n in gr.g.node if n.op_type == "Add"]:
        res = gr.residual_index(add)
        for i, name in enumerate(add.input):
            if gr.is_quantized(name) and i != res:
                add.input[i] = gr.through_qdq(name)
    drop_dead_nodes(model)
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save(model, str(path))
    ops = [n.op_type for n in model.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear"),
            "nodes": len(ops)}


def high_precision_fp16(path: Path) -> dict[str, Any]:
    """Unquantized layers in FP16 inside the file, as Model Optimizer's ``high_precision_dtype="fp16"``
    does: a strongly typed TensorRT build (10 or 11) then runs them in FP16 because the file says so,
    not because of a builder flag. Q/DQ with FP16 scales needs opset 19, so the graph is converted
    first; fp32 input and output are kept. On failure the file stays FP32 (logged)."""
    import warnings

    import onnx
    from onnx import version_converter

    from edgecat.export.fp16 import convert_fp16

    model = onnx.load(str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_fp16(version_converter.convert_version(model, HIGH_PRECISION_OPSET))
    except Exception as exc:  # noqa: BLE001 - the version converter raises plain exceptions
        log.warning("%s: unquantized layers stay FP32 (FP16 conversion failed: %s)", TRT_FILE,
                    str(exc)[:200])
        return {"high_precision_dtype": "fp32"}
    onnx.save(model, str(path))
    return {"high_precision_dtype": "fp16", "opset": HIGH_PRECISION_OPSET}


def drop_dead_nodes(model: Any) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads, then initializers nothing reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input} | outputs
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
