"""Bias correction for INT8 files: the systematic output shift weight quantization causes is removed
from each layer's bias, so a model keeps FP32's answers after quantization.

Rounding a layer's weights to int8 moves its output by ``(Wq - W) . x``. Averaged over real inputs
that error does not vanish: it is ``(Wq - W) . E[x]`` per output channel, a bias that adds up layer
after layer. Depthwise convolutions (3x3 = 9 weights per channel) have too few weights for the
rounding errors to average out, so MobileNet-style networks lose most of their INT8 accuracy this
way, and a less-converged model (a short fine-tune) more than a fully trained one. Subtracting
``(Wq - W) . E[x]`` from the bias removes it (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", 2019, empirical variant; NNCF's "fast bias correction" and AIMET's
bias correction do the same). ``E[x]`` is the per-channel mean of the layer's input in the FP32
graph over calibration images (training split), so no label is used and the graph, its Q/DQ
placement and its speed are unchanged.

Measured on MobileNetV2 160 px after a short fine-tune (1,000 validation photos, ONNX Runtime INT8
vs FP32): accuracy -0.9 points -> -0.1, confident answers flipped 7 -> 0 (README "Accuracy").

ONNX only here (both flavours); LiteRT files get the same correction in
:mod:`edgecat.export.litert_bias`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: calibration images whose activations give E[x] (means converge long before 200 photos)
BIAS_CORRECTION_IMAGES = 200
#: images run through the FP32 graph at once while collecting the means
CHUNK = 16


def input_means(model_path: Path, images: np.ndarray, tensors: list[str], chunk: int = CHUNK) -> dict[str, np.ndarray]:
    """Per-channel (axis 1, NCHW) mean of the named tensors of an ONNX model over ``images``
    (raw 0-255 NHWC batches, as deployment feeds them)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor by name
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, float] = {}
    for i in range(0, len(images), chunk):
        for t, v in zip(tensors, sess.run(tensors, {inp: images[i:i + chunk].astype(np.float32)})):
            v = np.asarray(v, np.float64)
            axes = tuple(a for a in range(v.ndim) if a != 1)
            sums[t] = sums.get(t, 0) + v.sum(axis=axes)
            counts[t] = counts.get(t, 0) + v.size / v.shape[1]
    return {t: sums[t] / counts[t] for t in tensors}


def _dequantized_weight(gr: Any, name: str) -> np.ndarray | None:
    """The weight a quantized node really computes with: an int8 initializer through DequantizeLinear
    (CPU flavour), or a float initializer through a Q/DQ pair (TensorRT flavour), dequantized; None
    when the weight is not quantized (a node kept in float)."""
    dq = gr.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    q = gr.producer.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        w = gr.const(q.input[0])
        scale = gr.const(q.input[1])
        zp = gr.const(q.input[2]) if len(q.input) > 2 and q.input[2] else None
        if w is None or scale is None:
            return None
        info = np.iinfo(zp.dtype if zp is not None else np.int8)
        s, z = _per_axis(scale, w.ndim, axis), 0.0 if zp is None else _per_axis(zp, w.ndim, axis).astype(np.float64)
        wq = np.clip(np.round(w.astype(np.float64) / s) + z, info.min, info.max)
        return (wq - z) * s
    xv, scale = gr.const(dq.input[0]), gr.const(dq.input[1])
    if xv is None or scale is None:
        return None
    zp = gr.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    z = 0.0 if zp is None else _per_axis(zp, xv.ndim, axis).astype(np.float64)
    return (xv.astype(np.float64) - z) * _per_axis(scale, xv.ndim, axis)


def _per_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    if v.size > 1:
        shape[axis] = -1
    return np.asarray(v, np.float64).reshape(shape)


def conv_shift(dw: np.ndarray, mean: np.ndarray, group: int) -> np.ndarray:
    """Per output channel: sum over (input channel, kh, kw) of the weight error times that input
    channel's mean; ``dw`` is [Cout, Cin/group, kh, kw]."""
    cout, cin_g = dw.shape[0], dw.shape[1]
    if group == 1:
        return np.einsum("oikl,i->o", dw, mean[:cin_g])
    per = cout // group
    per_in = dw.reshape(cout, cin_g, -1).sum(axis=2)  # [Cout, Cin/g]
    idx = (np.arange(cout) // per)[:, None] * cin_g + np.arange(cin_g)[None, :]
    return (per_in * mean[idx]).sum(axis=1)


def correct_onnx(qdq_path: Path, fp32_path: Path, images: np.ndarray, op_types: tuple[str, ...] = ("Conv",),
                 name: str = "INT8") -> dict[str, Any]:
    """Rewrite ``qdq_path`` in place with every quantized-weight node's bias corrected.

    ``fp32_path`` is the FP32 graph the QDQ file was quantized from (ORT's pre-processed one, so the
    node names match). The bias is written back in the file's own form: int32 with its scale (CPU
    flavour) or float (TensorRT flavour). Returns what the manifest records."""
    import onnx
    from onnx import numpy_helper

    from edgecat.export.trt_rules import Graph

    model = onnx.load(str(qdq_path))
    gr = Graph(model)
    fp32 = onnx.load(str(fp32_path))
    fnodes = {n.name: n for n in fp32.graph.node}
    finits = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    targets = []
    for n in gr.g.node:
        f = fnodes.get(n.name)
        if n.op_type not in op_types or f is None or len(n.input) < 3 or not n.input[2]:
            continue
        w, wq = finits.get(f.input[1]), _dequantized_weight(gr, n.input[1])
        if w is None or wq is None or w.shape != wq.shape:
            continue
        targets.append((n, f, wq - w.astype(np.float64)))
    if not targets:
        return {"method": "bias correction", "layers": 0, "images": len(images)}
    means = input_means(fp32_path, images, sorted({f.input[0] for _, f, _ in targets}))
    largest, corrected = 0.0, 0
    for n, f, dw in targets:
        group = next((a.i for a in f.attribute if a.name == "group"), 1)
        shift = conv_shift(dw, means[f.input[0]], group)
        bias = n.input[2]
        bdq = gr.producer.get(bias)
        if bdq is not None and bdq.op_type == "DequantizeLinear":  # int32 bias (CPU flavour)
            init = gr.inits[bdq.input[0]]
            scale = np.asarray(gr.const(bdq.input[1]), np.float64)
            new = numpy_helper.to_array(init).astype(np.float64) * scale - shift
            lim = np.iinfo(np.int32)
            init.CopyFrom(numpy_helper.from_array(np.clip(np.round(new / scale), lim.min, lim.max).astype(np.int32),
                                                  init.name))
        elif bias in gr.inits:  # float bias (TensorRT flavour: no int32 biases)
            init = gr.inits[bias]
            old = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((old.astype(np.float64) - shift).astype(old.dtype), init.name))
        else:
            continue
        corrected += 1
        largest = max(largest, float(np.max(np.abs(shift))))
    onnx.save(model, str(qdq_path))
    log.debug("%s: bias correction of %d layers, largest shift %.3g", name, corrected, largest)
    return {"method": "bias correction", "layers": corrected, "images": len(images),
            "largest_shift": round(largest, 6)}


__all__ = ["BIAS_CORRECTION_IMAGES", "conv_shift", "correct_onnx", "input_means"]
