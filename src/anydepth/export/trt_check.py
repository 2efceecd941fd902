"""Static check of an ONNX graph against the TensorRT 10 ONNX parser's documented operator support.

TensorRT is not installable everywhere (not on a CPU-only machine, not on every GPU image), so
``anydepth export --format onnx`` cannot build an engine to prove that TensorRT accepts its file. This module
checks the graph against what the parser documents instead (onnx-tensorrt ``docs/operators.md`` of the
10.x releases, "Operator Support Matrix", and the restrictions listed there):

* the default-domain opset is within TensorRT 10's range (9 to 20) and no other operator domain is used;
* every operator is one the matrix marks as supported;
* per-operator restrictions: ``axes`` inputs that must be initializers or constants (``Slice``, ``Squeeze``,
  ``Unsqueeze``, ``Reduce*``, ``Pad``, ``CumSum``), ``Resize`` modes (nearest/linear, the five coordinate
  transformations, no antialiasing, ``stretch`` aspect policy), ``GridSample`` on 4-D inputs only, only the
  first output of ``LayerNormalization``, pooling without dilations, ``TopK`` sorted, ``Dropout`` in inference,
  ``ScatterND`` without reduction;
* tensors of type DOUBLE (TensorRT casts them to float32 with clamping: reported as a warning).

It is a static check of the documented interface, not a substitute for building the engine (``trtexec``,
``docs/efficiency.md``): kernel availability for a given GPU and precision is decided by the builder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["TRT_OPSET_RANGE", "TRT_SUPPORTED_OPS", "TrtIssue", "check_tensorrt"]

#: Default-domain opsets the TensorRT 10 ONNX parser reads (inclusive).
TRT_OPSET_RANGE = (9, 20)

#: Operators marked supported ("Y") in the TensorRT 10.x support matrix.
TRT_SUPPORTED_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil
    Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
    GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
    MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
    ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
    ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
    Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)

# operator -> index of an input that must be an initializer or a Constant output
_CONST_INPUTS = {
    "Slice": 3,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Pad": 3,
    "CumSum": 1,
    **{
        op: 1
        for op in (
            "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum "
            "ReduceSumSquare"
        ).split()
    },
}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_DOUBLE = 11  # onnx.TensorProto.DOUBLE


@dataclass(frozen=True)
class TrtIssue:
    """One finding: ``severity`` is ``"error"`` (the parser rejects it) or ``"warning"`` (accepted with a
    conversion); ``node`` the node's name (or ``"<model>"``), ``op`` its operator, ``message`` what and why."""

    severity: str
    node: str
    op: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.node} ({self.op}): {self.message}"


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph of its control-flow nodes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.g is not None and a.g.node:
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def check_tensorrt(model: Any) -> list[TrtIssue]:
    """Check an ONNX model against the TensorRT 10 parser's documented operator support.

    Args:
        model: an ``onnx.ModelProto`` or the path of an ``.onnx`` file (external data is not loaded).

    Returns:
        The findings, errors first; empty when the graph uses only what TensorRT 10 documents as supported.
    """
    import onnx

    if isinstance(model, str | os.PathLike):
        model = onnx.load(os.fspath(model), load_external_data=False)
    issues: list[TrtIssue] = []
    lo, hi = TRT_OPSET_RANGE
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if not lo <= imp.version <= hi:
                issues.append(
                    TrtIssue(
                        "error", "<model>", "", f"opset {imp.version} is outside TensorRT 10's {lo}-{hi}"
                    )
                )
        else:
            issues.append(
                TrtIssue(
                    "error",
                    "<model>",
                    "",
                    f"operator domain {imp.domain!r} (custom ops need a TensorRT plugin)",
                )
            )
    for f in model.functions:
        issues.append(TrtIssue("warning", f.name, "function", "model-local function (inlined by the parser)"))

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
    except Exception:  # noqa: BLE001 - shape inference is only used for ranks; fall back to no ranks
        inferred = model
    ranks: dict[str, int] = {}
    types: dict[str, int] = {}
    g0 = inferred.graph
    for vi in [*g0.input, *g0.value_info, *g0.output]:
        tt = vi.type.tensor_type
        types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            ranks[vi.name] = len(tt.shape.dim)
    for init in g0.initializer:
        types[init.name] = init.data_type
        ranks[init.name] = len(init.dims)

    for graph in _graphs(model.graph):
        constants = {i.name for i in graph.initializer} | {
            o for n in graph.node if n.op_type == "Constant" for o in n.output
        }
        consumed = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        for node in graph.node:
            issues.extend(_check_node(node, constants, consumed, ranks))
    double = sorted(n for n, t in types.items() if t == _DOUBLE)
    if double:
        issues.append(
            TrtIssue(
                "warning",
                "<model>",
                "",
                f"{len(double)} DOUBLE tensor(s) (e.g. {double[0]}): TensorRT casts them to float32",
            )
        )
    return sorted(issues, key=lambda i: i.severity != "error")


def _check_node(node: Any, constants: set[str], consumed: set[str], ranks: dict[str, int]) -> list[TrtIssue]:
    op = node.op_type
    name = node.name or (node.output[0] if node.output else op)
    out: list[TrtIssue] = []

    def err(msg: str) -> None:
        out.append(TrtIssue("error", name, op, msg))

    if node.domain not in ("", "ai.onnx"):
        err(f"operator of domain {node.domain!r} needs a TensorRT plugin")
        return out
    if op not in TRT_SUPPORTED_OPS:
        err("not supported by the TensorRT 10 ONNX parser")
        return out
    a = _attrs(node)
    k = _CONST_INPUTS.get(op)
    if k is not None and len(node.input) > k and node.input[k] and node.input[k] not in constants:
        err(f"input {k} ({'axis' if op == 'CumSum' else 'axes'}) must be an initializer or a constant")
    if op == "Resize":
        if a.get("mode", "nearest") not in _RESIZE_MODES:
            err(f"mode {a.get('mode')!r} (TensorRT: nearest, linear)")
        if a.get("coordinate_transformation_mode", "half_pixel") not in _RESIZE_COORDS:
            err(f"coordinate_transformation_mode {a.get('coordinate_transformation_mode')!r}")
        if (
            a.get("mode", "nearest") == "nearest"
            and a.get("nearest_mode", "round_prefer_floor") not in _NEAREST_MODES
        ):
            err(f"nearest_mode {a.get('nearest_mode')!r}")
        if a.get("antialias", 0):
            err("antialiasing is not supported")
        if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            err(f"keep_aspect_ratio_policy {a.get('keep_aspect_ratio_policy')!r} (TensorRT: stretch)")
    elif op == "GridSample":
        r = ranks.get(node.input[0])
        if r is not None and r != 4:
            err(f"input of rank {r} (TensorRT: 4-D only)")
    elif op == "LayerNormalization":
        if any(o and o in consumed for o in node.output[1:]):
            err("only the first output (Y) is supported; Mean/InvStdDev are used")
    elif op in ("AveragePool", "MaxPool", "LpPool"):
        if any(d != 1 for d in a.get("dilations", [])):
            err("dilations must be empty or all ones")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1] in consumed:
            err("the Indices output is not supported")
    elif op == "TopK":
        if a.get("sorted", 1) != 1:
            err("sorted must be 1")
    elif op == "ScatterND":
        if "reduction" in a:  # the parser rejects the attribute itself, even "none"
            err(f"the reduction attribute ({a['reduction']!r}) is not supported")
    elif op == "Dropout":
        if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
            err("training_mode must be an initializer (False)")
    return out
