"""What keeps INT8's accuracy: bias correction and layers kept in float, on a tiny real bundle."""

from __future__ import annotations

import numpy as np
import pytest

from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError


def _graph(path):
    import onnx

    return onnx.load(str(path))


def _weight_is_quantized(model, node_name: str) -> bool:
    """Whether ``node_name``'s weight (input 1) comes through DequantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    prod = producers.get(node.input[1])
    return prod is not None and prod.op_type == "DequantizeLinear"


@pytest.mark.parametrize("flavour", ["cpu", "trt"])
def test_keep_float_nodes_are_float_in_the_file_and_recorded(tiny_bundle, synth_data, flavour):
    """Nodes named in ``keep_float`` (the first conv, the last conv) are left unquantized in the written
    graph: their weights are float initializers, not DequantizeLinear outputs; a misspelt name is one
    clear error, not a file quietly quantized in full."""
    from edgecat.export.quantize import KINDS, quantize_int8

    b = Bundle.open(tiny_bundle)
    calib = synth_data / "train"
    quantize_int8(b, flavour, calib=calib, calib_size=24)
    full = _graph(tiny_bundle / KINDS[flavour].file)
    convs = [n.name for n in full.graph.node if n.op_type == "Conv"]
    first, last = convs[0], convs[-1]
    assert _weight_is_quantized(full, first) and _weight_is_quantized(full, last)

    quantize_int8(b, flavour, calib=calib, calib_size=24, keep_float=[first, last])
    mixed = _graph(tiny_bundle / KINDS[flavour].file)
    assert not _weight_is_quantized(mixed, first) and not _weight_is_quantized(mixed, last)
    assert _weight_is_quantized(mixed, convs[1])  # the rest stays INT8
    entry = Bundle.open(tiny_bundle).artifacts[KINDS[flavour].key]["quantization"]
    assert {first, last} <= set(entry["unquantized_nodes"])

    with pytest.raises(EdgecatError, match="no node named block_99"):
        quantize_int8(b, flavour, calib=calib, calib_size=24, keep_float=["block_99_nothing"])


def test_bias_correction_is_the_default_rewrites_biases_and_is_recorded(tiny_bundle, synth_data):
    """By default every quantized Conv's int32 bias is corrected for its weights' rounding (recorded
    with the layer count); ``bias_correction=False`` gives the uncorrected file."""
    from onnx import numpy_helper

    from edgecat.export.quantize import quantize_int8

    b = Bundle.open(tiny_bundle)
    calib = synth_data / "train"
    quantize_int8(b, "cpu", calib=calib, calib_size=24, bias_correction=False)
    plain = {i.name: numpy_helper.to_array(i) for i in _graph(tiny_bundle / "model.int8.onnx").graph.initializer}
    assert Bundle.open(tiny_bundle).artifacts["onnx-int8"]["quantization"]["bias_correction"] is None

    quantize_int8(b, "cpu", calib=calib, calib_size=24)
    model = _graph(tiny_bundle / "model.int8.onnx")
    fixed = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    producers = {o: n for n in model.graph.node for o in n.output}
    bias_inits = [producers[n.input[2]].input[0] for n in convs if n.input[2] in producers]
    changed = [k for k in bias_inits if not np.array_equal(plain[k], fixed[k])]
    assert len(changed) >= len(bias_inits) // 2, (len(changed), len(bias_inits))
    info = Bundle.open(tiny_bundle).artifacts["onnx-int8"]["quantization"]["bias_correction"]
    assert info["method"] == "bias correction" and info["layers"] == len(bias_inits) and info["images"] == 24


def test_conv_shift_matches_a_direct_convolution():
    """The per-channel shift (Wq - W) . E[x] equals the mean output change of a real convolution on
    inputs with that mean (grouped/depthwise included), so the correction removes what rounding adds."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgecat.export.bias_correction import conv_shift

    rng = np.random.default_rng(0)
    for group, cin, cout in ((1, 3, 4), (4, 4, 4), (2, 4, 6)):
        dw = rng.normal(size=(cout, cin // group, 3, 3)).astype(np.float32)
        x = (rng.normal(size=(1, cin, 1, 1)) * 3 + 0.01 * rng.normal(size=(64, cin, 8, 8))).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, pads=[1, 1, 1, 1])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(dw, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": x})[0][:, :, 1:-1, 1:-1]  # interior: no padding in the window
        want = y.mean(axis=(0, 2, 3))
        got = conv_shift(dw.astype(np.float64), x.mean(axis=(0, 2, 3)).astype(np.float64), group)
        assert np.allclose(got, want, rtol=1e-3, atol=1e-2), (group, got, want)
