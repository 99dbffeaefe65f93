"""TensorRT's rules for an ONNX file, checked on a CPU without TensorRT.

No machine of this project has TensorRT, so what its ONNX parser refuses, and what defeats its Q/DQ
fusions, is checked here by walking the graph. Every :class:`Violation` names the rule and where the
rule comes from:

- ``PARSER``: onnx-tensorrt's supported-operator list, ``docs/operators.md`` at tag
  ``release/10.1-GA`` (commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, "TensorRT 10.0 supports
  operators in the inclusive range of opset 9 to opset 20"), and the parser's DequantizeLinear error
  "only activation types allowed as input to this layer" (NVIDIA/TensorRT#3360, onnx/onnx-tensorrt#850).
- ``EXPLICIT_Q``: TensorRT developer guide, "Explicit Quantization" (Q/DQ placement recommendations:
  quantize all inputs of weighted operations, do not quantize their outputs, per-tensor activations,
  per-channel weights, zero points 0, quantize the residual input of an Add).
- ``DYNAMIC``: TensorRT developer guide, "Working with Dynamic Shapes": every dynamic input dimension
  needs a range in the optimization profile, and the engines here range the batch only.
- ``MODELOPT``: NVIDIA Model Optimizer ``modelopt.onnx.quantization`` (``ort_utils.configure_ort``'s
  TensorRT options, ``graph_utils.build_non_residual_input_map``), which implements that guidance.
- ``STRONG_Q``: onnx-tensorrt's Q/DQ importer (``QuantDequantLinearHelper``): in a strongly typed
  network (how edgecat builds every engine) a QuantizeLinear's scale must have its input's type;
  the parser inserts that Cast only for opset < 19, and edgecat's Q/DQ files are opset 19.

The residual-Add analysis here is also what :mod:`edgecat.export.quantize` uses to place Q/DQ, so the
quantizer and the checker cannot disagree about which Add input is the residual one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError

PARSER = "onnx-tensorrt docs/operators.md (release/10.1-GA, 96e7811)"
PARSER_DQ = "onnx-tensorrt DequantizeLinear importer (NVIDIA/TensorRT#3360, onnx/onnx-tensorrt#850)"
EXPLICIT_Q = "TensorRT developer guide, Explicit Quantization"
MODELOPT = "NVIDIA Model Optimizer modelopt.onnx.quantization"
STRONG_Q = ("onnx-tensorrt QuantDequantLinearHelper, strongly typed networks (a QuantizeLinear scale is cast to "
            "the input's type only below opset 19)")
DYNAMIC = ("TensorRT developer guide, Working with Dynamic Shapes (each dynamic input dimension needs an "
           "optimization-profile range; edgecat's profile ranges the batch only)")

#: opset range of the ai.onnx domain onnx-tensorrt 10.x imports (docs/operators.md, first line)
OPSET_RANGE = (9, 20)

#: operators marked "Y" in onnx-tensorrt docs/operators.md at release/10.1-GA (96e7811)
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: "Restrictions" column of the same table, for the operators whose restriction is an input that must
#: be an initializer (op -> input index)
INITIALIZER_INPUTS = {"Pad": 3, "ReduceMean": 1, "ReduceMax": 1, "ReduceSum": 1, "Slice": 3,
                      "Squeeze": 1, "Unsqueeze": 1, "CumSum": 1}
#: pooling restrictions of the same table: "2D or 3D pooling only", "dilations must be empty or all ones"
POOLS = ("MaxPool", "AveragePool")

WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: activations TensorRT fuses into the weighted op before them (Conv+Clip, Conv+Relu)
FUSED_ACTIVATIONS = frozenset({"Clip", "Relu"})
#: consumers TensorRT runs from Q/DQ inputs (weighted ops, the residual Add, pooling, Concat)
QUANT_CONSUMERS = WEIGHTED | {"Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat"}
QUANTIZED_TYPES = {3, 17, 22}  # TensorProto INT8, FLOAT8E4M3FN, INT4: the "Supported Types" of DequantizeLinear
QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Violation:
    """One place where a file breaks one rule."""

    rule: str
    node: str
    detail: str
    source: str

    def __str__(self) -> str:
        return f"{self.node}: {self.detail} [rule {self.rule}: {self.source}]"


class Graph:
    """Producer/consumer maps over an ONNX graph, with Q/DQ pairs seen through when asked."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.opset = next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 0)
        self._types: dict[str, int] | None = None

    @property
    def types(self) -> dict[str, int]:
        """Tensor name -> ONNX element type, from the graph's declarations, initializers, Constant and
        Cast nodes, and ONNX shape inference for the rest (computed once, when a rule asks)."""
        if self._types is None:
            from onnx import shape_inference

            try:
                inferred = shape_inference.infer_shapes(self.model, strict_mode=False)
            except Exception:  # noqa: BLE001 - inference is best effort; declared types still count
                inferred = self.model
            types: dict[str, int] = {}
            for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
                if vi.type.tensor_type.elem_type:
                    types[vi.name] = vi.type.tensor_type.elem_type
            types.update({name: init.data_type for name, init in self.inits.items()})
            for n in self.g.node:
                attrs = {a.name: a for a in n.attribute}
                if n.op_type == "Constant" and "value" in attrs:
                    types[n.output[0]] = attrs["value"].t.data_type
                elif n.op_type == "Cast" and "to" in attrs:
                    types[n.output[0]] = attrs["to"].i
            self._types = types
        return self._types

    def is_const(self, name: str) -> bool:
        p = self.producer.get(name)
        return name in self.inits or (p is not None and p.op_type == "Constant")

    def const(self, name: str) -> Any:
        """The numpy value of an initializer or Constant output (None for activations)."""
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            for a in p.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def through_qdq(self, name: str) -> str:
        """The float tensor a DQ(Q(x)) chain dequantizes (``name`` itself otherwise)."""
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = self.producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                return q.input[0]
        return name

    def is_quantized(self, name: str) -> bool:
        p = self.producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear" and not self.is_const(p.input[0]) \
            and self.through_qdq(name) != name

    def source_op(self, name: str, skip: frozenset[str] = frozenset({"BatchNormalization"})) -> Any:
        """The node that makes ``name`` (through Q/DQ and ``skip`` ops), None for inputs/constants."""
        node = self.producer.get(self.through_qdq(name))
        while node is not None and node.op_type in skip and node.input:
            node = self.producer.get(self.through_qdq(node.input[0]))
        return node

    def ancestors(self, name: str) -> dict[str, int]:
        """Float-graph ancestors of tensor ``name``: node name -> distance (Q/DQ not counted)."""
        depth: dict[str, int] = {}
        start = self.producer.get(self.through_qdq(name))
        todo = deque([(start, 0)] if start is not None else [])
        while todo:
            node, d = todo.popleft()
            if node.name in depth:
                continue
            depth[node.name] = d
            for i in node.input:
                p = self.producer.get(self.through_qdq(i))
                if p is not None and p.op_type not in QDQ and not self.is_const(i):
                    todo.append((p, d + 1))
        return depth

    def residual_index(self, add: Any) -> int | None:
        """Index of the residual input of a two-input Add, or None when it is no residual Add.

        Model Optimizer's rule (graph_utils.build_non_residual_input_map): an input made by a weighted
        op is the non-residual one TensorRT fuses into that op; with two such inputs, the one on the
        longer path to their lowest common ancestor is non-residual."""
        if len(add.input) != 2 or any(self.is_const(self.through_qdq(i)) for i in add.input):
            return None
        if any(self.producer.get(self.through_qdq(i)) is None for i in add.input):
            return None
        backbone = [(s is not None and s.op_type in WEIGHTED) for s in (self.source_op(i) for i in add.input)]
        if not any(backbone):
            return None
        a, b = (self.ancestors(i) for i in add.input)
        common = set(a) & set(b)
        lca = min(common, key=lambda n: a[n] + b[n]) if common else None
        d = (a[lca], b[lca]) if lca else (0, 0)
        if all(backbone):
            return 1 if d[0] > d[1] else 0
        weighted = backbone.index(True)
        if lca is not None and lca == self.source_op(add.input[weighted]).name:
            return None  # the other branch starts at the weighted op itself: not a skip connection
        return 1 - weighted


# ------------------------------------------------------------------------------ the rules
def _zero_point_rules(gr: Graph, node: Any) -> list[Violation]:
    out = []
    if len(node.input) < 3 or not node.input[2]:
        if node.op_type == "QuantizeLinear":
            out.append(Violation("int8-zero-point", node.name, "QuantizeLinear without a zero point "
                                 "outputs UINT8, which TensorRT accepts only as network I/O", PARSER))
        return out
    zp = gr.const(node.input[2])
    zp_init = gr.inits.get(node.input[2])
    if zp is None or zp.any():
        out.append(Violation("zero-point-0", node.name, f"{node.op_type} zero point is not 0 "
                             "(symmetric quantization only)", f"{PARSER}; {EXPLICIT_Q}"))
    elif node.op_type == "QuantizeLinear" and zp_init is not None and zp_init.data_type not in QUANTIZED_TYPES:
        out.append(Violation("int8-zero-point", node.name, f"{node.op_type} zero point has ONNX type "
                             f"{zp_init.data_type}, not INT8", PARSER))
    return out


def _qdq_rules(gr: Graph, node: Any) -> list[Violation]:
    out = _zero_point_rules(gr, node)
    x = node.input[0]
    if node.op_type == "DequantizeLinear" and gr.is_const(x):
        init = gr.inits.get(x)
        dtype = init.data_type if init is not None else None
        if dtype is not None and dtype not in QUANTIZED_TYPES:
            out.append(Violation("dq-int8-input", node.name, f"DequantizeLinear on a constant of ONNX type {dtype} "
                                 "(an int32 bias?): only INT8/FP8/INT4 inputs are allowed", PARSER_DQ))
    scale = gr.const(node.input[1])
    per_channel = scale is not None and scale.size > 1
    const_input = gr.is_const(x) or gr.is_const(gr.through_qdq(node.output[0]))
    if per_channel and not const_input:
        out.append(Violation("per-tensor-activations", node.name,
                             f"per-channel ({scale.size} scales) quantization of an activation", EXPLICIT_Q))
    if per_channel and node.op_type == "DequantizeLinear":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        for c in gr.consumers.get(node.output[0], []):
            if c.op_type == "Conv" and len(c.input) > 1 and c.input[1] == node.output[0] and axis != 0:
                out.append(Violation("conv-weight-axis-0", node.name, f"Conv weights quantized along axis {axis}, "
                                     "not the output-channel axis 0", EXPLICIT_Q))
    return out


def _q_type_rule(gr: Graph, node: Any) -> list[Violation]:
    """QuantizeLinear input and scale of different types (float32 activations, float16 scales): a
    strongly typed network refuses it from opset 19 on, where the parser adds no Cast."""
    if node.op_type != "QuantizeLinear" or gr.opset < 19 or len(node.input) < 2:
        return []
    x_type, scale_type = gr.types.get(node.input[0]), gr.types.get(node.input[1])
    if not x_type or not scale_type or x_type == scale_type:
        return []
    from onnx import TensorProto

    def name(t: int) -> str:
        return TensorProto.DataType.Name(t)

    return [Violation("q-scale-type", node.name, f"QuantizeLinear input is {name(x_type)} but its scale is "
                      f"{name(scale_type)} (opset {gr.opset}): cast the input, or store the scale as "
                      f"{name(x_type)}", STRONG_Q)]


def _placement_rules(gr: Graph, node: Any) -> list[Violation]:
    """Q/DQ on the output of a weighted op (directly or after its fused Clip/Relu) feeding an op
    TensorRT does not run from Q/DQ inputs: it splits Conv+Clip and adds a rounding step."""
    if node.op_type != "QuantizeLinear" or gr.is_const(node.input[0]):
        return []
    src = gr.producer.get(node.input[0])
    if src is not None and src.op_type in FUSED_ACTIVATIONS:
        src = gr.producer.get(gr.through_qdq(src.input[0]))
    if src is None or src.op_type not in WEIGHTED:
        return []
    out = []
    for dq in gr.consumers.get(node.output[0], []):
        if dq.op_type != "DequantizeLinear":
            continue
        for c in gr.consumers.get(dq.output[0], []):
            if c.op_type not in QUANT_CONSUMERS:
                out.append(Violation("no-weighted-output-qdq", node.name,
                                     f"Q/DQ on the output of {src.op_type} {src.name} feeds {c.op_type} {c.name}",
                                     f"{EXPLICIT_Q} (do not quantize outputs of weighted ops); {MODELOPT}"))
    return out


def _add_rules(gr: Graph, node: Any) -> list[Violation]:
    if node.op_type != "Add":
        return []
    quantized = [gr.is_quantized(i) for i in node.input]
    if len(quantized) == 2 and all(quantized):
        return [Violation("residual-add-input", node.name, "both Add inputs are quantized: only the residual "
                          "input may be, the other fuses into its Conv", f"{EXPLICIT_Q}; {MODELOPT}")]
    if any(quantized):
        res = gr.residual_index(node)
        if res is not None and quantized[1 - res]:
            return [Violation("residual-add-input", node.name, "the non-residual Add input is quantized and the "
                              "residual one is not", f"{EXPLICIT_Q}; {MODELOPT}")]
    return []


def _op_rules(gr: Graph, node: Any) -> list[Violation]:
    out = []
    if node.domain not in ("", "ai.onnx"):
        return [Violation("supported-op", node.name, f"operator {node.domain}::{node.op_type} is not ONNX", PARSER)]
    if node.op_type not in SUPPORTED_OPS:
        return [Violation("supported-op", node.name, f"operator {node.op_type} is not supported", PARSER)]
    idx = INITIALIZER_INPUTS.get(node.op_type)
    if idx is not None and len(node.input) > idx and node.input[idx] and not gr.is_const(node.input[idx]):
        out.append(Violation("supported-op", node.name, f"{node.op_type} input {idx} must be an initializer", PARSER))
    if node.op_type in POOLS:
        attrs = {a.name: a for a in node.attribute}
        if "dilations" in attrs and any(d != 1 for d in attrs["dilations"].ints):
            out.append(Violation("supported-op", node.name, f"{node.op_type} dilations must be all ones", PARSER))
        if "kernel_shape" in attrs and len(attrs["kernel_shape"].ints) not in (2, 3):
            out.append(Violation("supported-op", node.name, f"{node.op_type}: 2D or 3D pooling only", PARSER))
        if len(node.output) > 1 and node.output[1]:
            out.append(Violation("supported-op", node.name, "MaxPool Indices output is unsupported", PARSER))
    if node.op_type == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings")
                                          for a in node.attribute):
        out.append(Violation("supported-op", node.name, "Constant with a sparse/string value", PARSER))
    return out


def _graph_rules(gr: Graph) -> list[Violation]:
    out = []
    for imp in gr.model.opset_import:
        if imp.domain in ("", "ai.onnx") and not OPSET_RANGE[0] <= imp.version <= OPSET_RANGE[1]:
            out.append(Violation("opset", "graph", f"opset {imp.version} outside {OPSET_RANGE[0]}-{OPSET_RANGE[1]}",
                                 PARSER))
    for vi in list(gr.g.input) + list(gr.g.output):
        if vi.name in gr.inits:
            continue
        for k, dim in enumerate(vi.type.tensor_type.shape.dim):
            if k > 0 and not dim.dim_value > 0:
                out.append(Violation("static-except-batch", vi.name, f"dimension {k} is dynamic "
                                     f"({dim.dim_param or '?'}); only the batch may be",
                                     DYNAMIC))
    return out


def check_model(model: Any) -> list[Violation]:
    """Every rule broken by an ONNX ModelProto (empty list: TensorRT may build it as intended)."""
    gr = Graph(model)
    out = _graph_rules(gr)
    for node in gr.g.node:
        out += _op_rules(gr, node)
        if node.op_type in QDQ:
            out += _qdq_rules(gr, node) + _q_type_rule(gr, node)
        out += _placement_rules(gr, node)
        out += _add_rules(gr, node)
    return out


def check_tensorrt_onnx(path: str | Path) -> list[Violation]:
    """Every rule the ONNX file at ``path`` breaks."""
    import onnx

    return check_model(onnx.load(str(path), load_external_data=False))


def require_tensorrt_onnx(path: str | Path, what: str | None = None) -> None:
    """Raise an EdgecatError naming the first rules broken (and how many) when the file breaks any."""
    found = check_tensorrt_onnx(path)
    if found:
        shown = "; ".join(str(v) for v in found[:3])
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise EdgecatError(f"{what or Path(path).name} breaks {len(found)} TensorRT rule(s): {shown}{more}")


__all__ = ["Graph", "Violation", "check_model", "check_tensorrt_onnx", "require_tensorrt_onnx"]
