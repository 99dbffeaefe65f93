"""TensorRT's rules checked on a CPU: the TensorRT INT8 flavour of both backbones passes them, and each
rule refuses a graph that breaks it (ONNX Runtime's default Q/DQ recipe, hand-made graphs)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import _make_bundle, needs_tf
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.export.trt_rules import check_model, check_tensorrt_onnx, require_tensorrt_onnx


def _rules(path_or_model) -> collections.Counter:
    if isinstance(path_or_model, onnx.ModelProto):
        found = check_model(path_or_model)
    else:
        found = check_tensorrt_onnx(path_or_model)
    return collections.Counter(v.rule for v in found)


def _counts(path) -> dict[str, int]:
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    ops = collections.Counter(n.op_type for n in m.graph.node)
    return {"Q": ops["QuantizeLinear"], "DQ": ops["DequantizeLinear"], "Conv": ops["Conv"],
            "DQ_int32": sum(n.op_type == "DequantizeLinear" and n.input[0] in inits
                            and inits[n.input[0]].data_type == TensorProto.INT32 for n in m.graph.node)}


@pytest.fixture(scope="module")
def r50_bundle_src(tmp_path_factory, synth_data):
    pytest.importorskip("tensorflow")
    return _make_bundle(tmp_path_factory.mktemp("r50") / "r50-32", "resnet50", 32, synth_data, onnx=True)


# ------------------------------------------------------------------------------ both backbones
@needs_tf
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50"])
def test_trt_flavour_follows_tensorrt_rules(backbone, request, synth_data, tmp_path):
    import shutil

    from edgecat.export.quantize import quantize_int8

    src = request.getfixturevalue("tiny_bundle") if backbone == "mobilenet_v2" else \
        request.getfixturevalue("r50_bundle_src")
    if backbone == "resnet50":
        shutil.copytree(src, tmp_path / "b")
        src = tmp_path / "b"
    b = Bundle.open(src)
    assert check_tensorrt_onnx(b.artifact_path("onnx-fp32")) == []
    quantize_int8(b, "trt", calib=synth_data / "train", calib_size=16)
    path = src / "model.int8-trt.onnx"
    assert check_tensorrt_onnx(path) == []
    c = _counts(path)
    # one Q/DQ pair per Conv weight + one per distinct Conv input (residual Add inputs share theirs)
    assert c["DQ_int32"] == 0 and c["Q"] == c["DQ"] == 2 * c["Conv"], c
    entry = Bundle.open(src).artifacts["onnx-int8-trt"]
    assert entry["quantization"]["quantize_bias"] is False
    assert entry["quantization"]["node_counts"]["QuantizeLinear"] == c["Q"]
    # unquantized layers in FP16 in the file (Model Optimizer's high_precision_dtype), fp32 I/O kept
    model = onnx.load(str(path))
    assert entry["quantization"]["high_precision_dtype"] == "fp16" and model.opset_import[0].version == 19
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    scales = [i for i in model.graph.initializer if i.name.endswith("_scale")]
    assert scales and all(i.data_type == TensorProto.FLOAT16 for i in scales)
    # the strongly typed Q rule saw every QuantizeLinear with known, equal input and scale types
    from edgecat.export.trt_rules import Graph

    gr = Graph(model)
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs and {(gr.types.get(n.input[0]), gr.types.get(n.input[1])) for n in qs} == \
        {(TensorProto.FLOAT16, TensorProto.FLOAT16)}


# ------------------------------------------------------------------------------ negative, real graphs
@needs_tf
def test_ort_default_recipe_is_refused_with_the_rules_it_breaks(tiny_bundle, synth_data, tmp_path):
    """What edgecat wrote before: quantize_static with bias quantization on (its default) and Q/DQ on
    every Conv output and on both Add inputs."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgecat import imaging
    from edgecat.export.quantize import _reader

    files = imaging.list_images([synth_data / "train"])[:16]
    images = np.stack([imaging.load_for_model(f, (48, 48)) for f in files])
    reader, _ = _reader(images, "image")
    out = tmp_path / "ort-default.onnx"
    quantize_static(str(tiny_bundle / "model.onnx"), str(out), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True})
    rules = _rules(out)
    assert rules["dq-int8-input"] > 0  # Conv biases as int32 + DequantizeLinear
    assert rules["no-weighted-output-qdq"] > 0 and rules["residual-add-input"] > 0
    with pytest.raises(EdgecatError, match=r"breaks \d+ TensorRT rule.*rule dq-int8-input: onnx-tensorrt"):
        require_tensorrt_onnx(out)


@needs_tf
def test_cpu_flavour_is_refused_for_tensorrt(tiny_bundle, synth_data):
    from edgecat.export.quantize import quantize_int8

    quantize_int8(Bundle.open(tiny_bundle), "cpu", calib=synth_data / "train", calib_size=16)
    rules = _rules(tiny_bundle / "model.int8.onnx")
    assert rules["zero-point-0"] > 0 and rules["int8-zero-point"] > 0  # asymmetric uint8 activations


@needs_tf
def test_export_refuses_to_record_a_trt_file_that_breaks_a_rule(tiny_bundle, synth_data, monkeypatch):
    from edgecat.export import quantize

    real = quantize.flavour_options

    def with_bias(flavour, method):
        opts = real(flavour, method)
        opts["extra_options"] = {**opts["extra_options"], "QuantizeBias": True}
        return opts

    monkeypatch.setattr(quantize, "flavour_options", with_bias)
    with pytest.raises(EdgecatError, match="TensorRT INT8 model.*dq-int8-input"):
        quantize.quantize_int8(Bundle.open(tiny_bundle), "trt", calib=synth_data / "train", calib_size=16)
    assert not (tiny_bundle / "model.int8-trt.onnx").exists()
    assert not Bundle.open(tiny_bundle).has("onnx-int8-trt")


# ------------------------------------------------------------------------------ negative, hand-made
def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inits, in_dims=("N", 3, 8, 8), out_dims=("N", 4, 8, 8), opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_dims))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_graph(act_scale=0.1, act_zp=0, w_axis=0, w_zp=0):
    """x -> Q -> DQ -> Conv(DQ(int8 weight)) -> y, one knob per rule."""
    w = np.ones((4, 3, 1, 1), np.int8)
    scale = np.full(3, act_scale, np.float32) if np.ndim(act_scale) else np.float32(act_scale)
    zp = np.full(3, act_zp, np.int8) if np.ndim(act_scale) else np.int8(act_zp)
    axis = {"axis": 1} if np.ndim(act_scale) else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q", **axis),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq", **axis),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="wdq", axis=w_axis),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv")]
    n = w.shape[w_axis]
    inits = [_init("s", scale), _init("z", zp), _init("w", w), _init("ws", np.full(n, 0.01, np.float32)),
             _init("wz", np.full(n, w_zp, np.int8))]
    return _model(nodes, inits)


def test_handmade_conv_graph_passes():
    assert _rules(_conv_graph()) == collections.Counter()


def test_non_zero_zero_point_is_refused():
    assert _rules(_conv_graph(act_zp=3))["zero-point-0"] == 2
    assert _rules(_conv_graph(w_zp=1))["zero-point-0"] == 1


def test_per_channel_activations_and_conv_weight_axis_are_refused():
    assert _rules(_conv_graph(act_scale=[0.1, 0.2, 0.3]))["per-tensor-activations"] == 2
    assert _rules(_conv_graph(w_axis=1))["conv-weight-axis-0"] == 1


def test_q_dq_between_conv_and_its_clip_is_refused():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q_out"),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"], name="dq_out"),
             helper.make_node("Clip", ["cd", "lo", "hi"], ["y"], name="relu6")]
    inits = [_init("w", np.ones((4, 3, 1, 1), np.float32)), _init("s", np.float32(0.1)), _init("z", np.int8(0)),
             _init("lo", np.float32(0)), _init("hi", np.float32(6))]
    found = check_model(_model(nodes, inits))
    assert [v.rule for v in found] == ["no-weighted-output-qdq"]
    assert "Explicit Quantization" in str(found[0]) and "relu6" in str(found[0])


def test_both_add_inputs_quantized_is_refused():
    def qdq(t, k):
        return [helper.make_node("QuantizeLinear", [t, "s", "z"], [f"{t}q"], name=f"q{k}"),
                helper.make_node("DequantizeLinear", [f"{t}q", "s", "z"], [f"{t}d"], name=f"dq{k}")]

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="block_in"),
             helper.make_node("Conv", ["r", "w"], ["c"], name="conv"),
             *qdq("r", 0), *qdq("c", 1),
             helper.make_node("Add", ["rd", "cd"], ["y"], name="add")]
    inits = [_init("w", np.ones((3, 3, 1, 1), np.float32)), _init("s", np.float32(0.1)), _init("z", np.int8(0))]
    m = _model(nodes, inits, out_dims=("N", 3, 8, 8))
    assert _rules(m)["residual-add-input"] == 1
    m.graph.node[-1].input[1] = "c"  # only the residual (block input) quantized: what TensorRT fuses
    assert _rules(m)["residual-add-input"] == 0


def test_unsupported_ops_attributes_opset_and_dynamic_dims_are_refused():
    nodes = [helper.make_node("Col2Im", ["x", "a", "b"], ["y"], name="col2im")]
    inits = [_init("a", np.array([8, 8])), _init("b", np.array([1, 1]))]
    assert _rules(_model(nodes, inits))["supported-op"] == 1
    custom = _model([helper.make_node("QLinearConv", ["x"], ["y"], name="qc", domain="com.microsoft")], [])
    assert _rules(custom)["supported-op"] == 1
    pads = _model([helper.make_node("Shape", ["x"], ["p"], name="shape"),
                   helper.make_node("Pad", ["x", "p"], ["y"], name="pad")], [])
    assert _rules(pads) == collections.Counter()  # pads may be computed; only 'axes' (input 3) must be constant
    pads.graph.node[1].input.extend(["", "p"])
    assert _rules(pads)["supported-op"] == 1
    pool = _model([helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], dilations=[2, 2])], [])
    assert _rules(pool)["supported-op"] == 1
    assert _rules(_model([helper.make_node("Relu", ["x"], ["y"], name="r")], [], opset=21))["opset"] == 1
    dyn = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [], in_dims=("N", 3, "H", 8),
                 out_dims=("N", 3, "H", 8))
    found = [v for v in check_model(dyn) if v.rule == "static-except-batch"]
    assert len(found) == 2 and "dimension 2 is dynamic (H)" in str(found[0])


def _q_type_graph(cast_input: bool, opset: int = 19):
    """x (float32) -> [Cast to float16] -> Q/DQ with float16 scales -> Conv (float16 weights) -> y (float16):
    the layout of a Q/DQ file whose unquantized layers are kept in fp16."""
    x_q = "x16" if cast_input else "x"
    nodes = ([helper.make_node("Cast", ["x"], ["x16"], name="to_fp16", to=TensorProto.FLOAT16)] if cast_input else [])
    nodes += [helper.make_node("QuantizeLinear", [x_q, "s", "z"], ["xq"], name="q_in"),
              helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
              helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="wdq", axis=0),
              helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv")]
    inits = [_init("s", np.float16(0.1)), _init("z", np.int8(0)), _init("w", np.ones((4, 3, 1, 1), np.int8)),
             _init("ws", np.full(4, 0.01, np.float16)), _init("wz", np.zeros(4, np.int8))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4, 8, 8])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_quantize_input_and_scale_types_must_match_in_a_strongly_typed_network(tmp_path):
    """float32 into a QuantizeLinear with a float16 scale: TensorRT's strongly typed network refuses it
    from opset 19 on (the parser casts the scale only below 19). A Cast to float16 first is fine."""
    path = tmp_path / "mismatch.onnx"
    onnx.save(_q_type_graph(cast_input=False), str(path))
    found = [v for v in check_tensorrt_onnx(path) if v.rule == "q-scale-type"]
    assert len(found) == 1 and found[0].node == "q_in"
    assert "FLOAT but its scale is FLOAT16 (opset 19)" in str(found[0]) and "opset 19" in found[0].source
    with pytest.raises(EdgecatError, match=r"rule q-scale-type: onnx-tensorrt"):
        require_tensorrt_onnx(path)
    assert _rules(_q_type_graph(cast_input=True)) == collections.Counter()
    assert _rules(_q_type_graph(cast_input=False, opset=17))["q-scale-type"] == 0  # the parser casts the scale
