"""Checks, on the CPU host, that TensorRT's ONNX parser supports every node of a graph at the
type it runs at - so an unsupported node fails the export here, not the plan build on the GPU
host (or, on the onnxruntime backend, silently falls back to slower CUDA kernels).

The table is onnx-tensorrt's operator support matrix (docs/operators.md, TensorRT 10.x: the
parser of TensorRT 10.5 in Triton 24.10 supports at least these), limited to the operators an
XLM-R cross-encoder export uses. An operator missing from the table counts as unsupported:
adding one means reading its row in that matrix first. The type checked is the node's first
input (Where: its second, the first is the condition), which is what the matrix lists.
"""

from __future__ import annotations

from pathlib import Path

FLOATS = {"FLOAT", "FLOAT16", "BFLOAT16"}
INTS = {"INT32", "INT64"}
ANY = FLOATS | INTS | {"BOOL"}

# op -> input types its row lists (TensorRT 10.x). Clip lists floats only: the ids are clamped
# with Max/Min, which list INT64 (export/onnx_export.py bound_inputs).
SUPPORT: dict[str, set[str]] = {
    **dict.fromkeys(
        ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Range", "ReduceMean", "Relu", "Neg"],
        FLOATS | INTS,
    ),
    **dict.fromkeys(
        ["Cast", "Concat", "ConstantOfShape", "Expand", "Gather", "Identity", "Reshape", "Shape", "Slice"], ANY
    ),
    **dict.fromkeys(["Transpose", "Unsqueeze", "Squeeze", "Where", "Constant"], ANY),
    **dict.fromkeys(
        ["Erf", "Gemm", "LayerNormalization", "MatMul", "Sigmoid", "Softmax", "Sqrt", "Tanh", "Clip", "Pow"], FLOATS
    ),
    "Reciprocal": FLOATS,
    "Not": {"BOOL"},
}
OPSET_RANGE = (9, 20)  # "TensorRT 10.0 supports operators in the inclusive range of opset 9 to 20"


def _types(model) -> dict[str, str]:
    import onnx

    names = onnx.TensorProto.DataType.Name
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: names(v.type.tensor_type.elem_type) for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: names(t.data_type) for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    types[node.output[0]] = names(attribute.t.data_type)
    return types


def unsupported_nodes(path: Path) -> list[str]:
    """Every node TensorRT's parser would refuse, as 'name: Op at TYPE'; empty when all parse."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # structure only: no 2 GB of weights
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset} outside TensorRT's {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    types = _types(model)
    for node in model.graph.node:
        checked = node.input[1] if node.op_type == "Where" else (node.input[0] if node.input else node.output[0])
        dtype = types.get(checked, "UNDEFINED")
        if node.domain not in ("", "ai.onnx") or dtype not in SUPPORT.get(node.op_type, set()):
            op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            problems.append(f"{node.name or node.output[0]}: {op} at {dtype}")
    return problems


def check(path: Path) -> None:
    problems = unsupported_nodes(path)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise SystemExit(f"[export] {path.name}: TensorRT's ONNX parser does not support: {shown}")
