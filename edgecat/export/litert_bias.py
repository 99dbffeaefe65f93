"""LiteRT INT8 with bias correction: the same fix as :mod:`edgecat.export.bias_correction`, in the
TFLite flatbuffer.

The converter's one-shot INT8 conversion gives no place to change a bias after weights are rounded,
so the conversion runs in its two documented halves (what ``tf.lite.experimental.QuantizationDebugger``
does for selective quantization): calibrate only (the float model with every tensor's range recorded,
``converter._experimental_calibrate_only``), then quantize that model with the MLIR quantizer
(``tensorflow.lite.python.convert.mlir_quantize``; with no denylist it makes the file the one-shot
conversion makes). The quantized file's int32 biases are then corrected with ``E[x]`` measured on
the calibrated float model (same graph, same tensor names). ``keep_float`` names ops (by output
tensor) left in float, as the debugger's ``denylisted_nodes``.

Both halves are private TensorFlow entry points: where they are missing or fail, the one-shot
conversion is used and the manifest records that no correction was made.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: the weighted ops whose int32 bias is corrected
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_INT8, _FLOAT = 9, 0  # tflite TensorType codes


def calibrate_only(conv: Any) -> bytes:
    """The float flatbuffer with calibration ranges recorded (``conv`` set up for full-integer INT8)."""
    conv._experimental_calibrate_only = True
    return bytes(conv.convert())


def quantize_calibrated(calibrated: bytes, keep_float: list[str] | None = None) -> bytes:
    """Full-integer INT8 from a calibrated flatbuffer, float32 input and output kept; ops whose
    output tensor is named in ``keep_float`` stay float (dequantized around them)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    return bytes(convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                       input_data_type=tf.float32, output_data_type=tf.float32,
                                       denylisted_nodes=list(keep_float) if keep_float else None))


def _read(buf: bytes) -> Any:
    from tensorflow.lite.tools import flatbuffer_utils as fu

    return fu.read_model_from_bytearray(bytearray(buf))


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def op_table(buf: bytes) -> list[dict[str, Any]]:
    """Subgraph 0's ops in order: builtin name, output and input tensor names, output tensor types."""
    from tensorflow.lite.python import schema_py_generated as schema

    codes = {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    m = _read(buf)
    g = m.subgraphs[0]
    names = [_name(t) for t in g.tensors]
    rows = []
    for op in g.operators:
        code = m.operatorCodes[op.opcodeIndex]
        rows.append({"op": codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"),
                     "outputs": [names[i] for i in op.outputs],
                     "inputs": [names[i] if i >= 0 else None for i in op.inputs],
                     "out_types": [int(g.tensors[i].type) for i in op.outputs]})
    return rows


def _array(m: Any, g: Any, index: int) -> np.ndarray | None:
    from tensorflow.lite.python import schema_py_generated as schema

    t = g.tensors[index]
    data = m.buffers[t.buffer].data
    if data is None or not len(data):
        return None
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT8: np.int8,
             schema.TensorType.INT32: np.int32, schema.TensorType.FLOAT16: np.float16}.get(t.type)
    if dtype is None:
        return None
    return np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape(t.shape)


def input_means(float_buf: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel (last axis) mean of the input of every weighted op of a float flatbuffer over
    ``images`` (one at a time), keyed by the op's output tensor name."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecat.log import quiet_native_stderr

    want = {o["outputs"][0]: o["inputs"][0] for o in op_table(float_buf) if o["op"] in WEIGHTED}
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": here it is the point
        it = Interpreter(model_content=float_buf, experimental_preserve_all_tensors=True, num_threads=2)
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], [1, *images.shape[1:]])
        it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    sums: dict[str, np.ndarray] = {}
    for img in images:
        it.set_tensor(inp["index"], img[None].astype(np.float32))
        it.invoke()
        for out, x in want.items():
            v = it.get_tensor(index[x]).astype(np.float64)
            sums[out] = sums.get(out, 0) + v.reshape(-1, v.shape[-1]).mean(axis=0)
    return {k: v / len(images) for k, v in sums.items()}


def bias_correct(qbuf: bytes, float_buf: bytes, means: dict[str, np.ndarray]) -> tuple[bytes, dict[str, Any]]:
    """``qbuf`` with each int8-weight op's int32 bias corrected by ``-(Wq - W) . E[x]`` (W from
    ``float_buf``, the calibrated float model ``qbuf`` was quantized from)."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    m, fm = _read(qbuf), _read(float_buf)
    g, fg = m.subgraphs[0], fm.subgraphs[0]
    findex = {_name(t): i for i, t in enumerate(fg.tensors)}
    fops = {o["outputs"][0]: o for o in op_table(float_buf)}
    largest, corrected = 0.0, 0
    for k, o in enumerate(op_table(qbuf)):
        name = o["outputs"][0]
        if o["op"] not in WEIGHTED or name not in means or name not in fops:
            continue
        op = g.operators[k]
        wi, bi = op.inputs[1], (op.inputs[2] if len(op.inputs) > 2 else -1)
        if bi < 0 or g.tensors[wi].type != _INT8 or g.tensors[bi].quantization is None:
            continue
        w8, b32 = _array(m, g, wi), _array(m, g, bi)
        fname = fops[name]["inputs"][1]
        fw = _array(fm, fg, findex[fname]) if fname in findex else None
        if w8 is None or b32 is None or fw is None or fw.shape != w8.shape:
            continue
        ws = np.asarray(g.tensors[wi].quantization.scale, np.float64)
        fw = fw.astype(np.float64)
        if o["op"] == "DEPTHWISE_CONV_2D":  # [1, kh, kw, C]
            shift = (w8 * ws.reshape(1, 1, 1, -1) - fw).sum(axis=(0, 1, 2)) * means[name]
        elif o["op"] == "CONV_2D":  # [Cout, kh, kw, Cin]
            shift = np.einsum("okli,i->o", w8 * ws.reshape(-1, 1, 1, 1) - fw, means[name])
        else:  # FULLY_CONNECTED [out, in]
            shift = (w8 * ws.reshape(-1, 1) - fw) @ means[name]
        bs = np.asarray(g.tensors[bi].quantization.scale, np.float64)
        lim = np.iinfo(np.int32)
        new = np.clip(np.round((b32 * bs - shift) / bs), lim.min, lim.max).astype(np.int32)
        m.buffers[g.tensors[bi].buffer].data = np.frombuffer(new.tobytes(), np.uint8)
        corrected += 1
        largest = max(largest, float(np.max(np.abs(shift))))
    info = {"method": "bias correction", "layers": corrected, "largest_shift": round(largest, 6)}
    return bytes(fu.convert_object_to_bytearray(m)), info


def last_stage_ops(buf: bytes) -> list[str]:
    """Output tensor names of the weighted ops of the network's last stage (the convolutions whose
    output has the smallest spatial size, before the pooling and the head). Per-layer sensitivity on
    MobileNetV2 put most of LiteRT INT8's remaining loss there (the late project/expand convs: few
    pixels, so each rounding error reaches the pooled features nearly undiluted), while those layers
    hold a small share of the compute."""
    m = _read(buf)
    g = m.subgraphs[0]
    sizes: dict[str, int] = {}
    for o, op in zip(op_table(buf), g.operators):
        shape = list(g.tensors[op.outputs[0]].shape)
        if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(shape) == 4:
            sizes[o["outputs"][0]] = int(shape[1]) * int(shape[2])
    if not sizes:
        return []
    smallest = min(sizes.values())
    return [name for name, size in sizes.items() if size == smallest]


def float_ops(buf: bytes) -> list[str]:
    """Output tensor names of the weighted ops that compute in float in a converted file (what
    ``keep_float`` kept; the manifest records it)."""
    return [o["outputs"][0] for o in op_table(buf) if o["op"] in WEIGHTED and o["out_types"][0] == _FLOAT]


#: ``keep_float`` value naming the rule :func:`last_stage_ops` instead of tensors
LAST_STAGE = "last-stage"

__all__ = ["LAST_STAGE", "bias_correct", "calibrate_only", "float_ops", "input_means", "last_stage_ops", "op_table",
           "quantize_calibrated"]
